"""Evaluators, named in the config and picked by module path (as big_vision's are).

    config.evals.validation = dict(type='likelihood', every_steps=1000, split='validation', ...)
    config.evals.sample = dict(type='samples', every_steps=5000, seconds=2.0)

`type` names experiments/evaluators/<type>.py, whose `Evaluator(context, **kwargs)` takes the
entry's other keys (but `every_steps`, which the trainer reads: run every that many steps and
at the last; 0: never) and whose `run(state) -> dict` returns scalars (floats) and
`metrics.Audio` clips. The trainer logs them to TensorBoard under '<name>/<key>' and into its
last metrics as '<name>_<key>'; `experiments/evaluate.py` runs an evaluator of any type over
a workdir's checkpoints. A new metric is a new module here and an entry in a config: the
trainer does not change. An evaluator may also define `baseline() -> dict`, figures that do not
depend on the model (the evaluate job records them once per split), and `report(record) -> str`,
a text the evaluate job prints with each result (e.g. tables).

Types: likelihood (bits per sample over a split), samples (audio clips from `generate`), spectral
(a mel vocoder against Griffin-Lim), clip_statistics (an unconditional model's clips against the
data's spectrogram statistics), description_length (a VQ-VAE hierarchy's bits, level by level),
transcription (a transcriber's mir_eval frame and note scores), translation (a translator
against paired renderings of the same scores by the target instruments).
"""

import dataclasses
import importlib
import pkgutil

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from data import pipeline


@dataclasses.dataclass(frozen=True)
class Context:
  """What an evaluator is built from: the run's config and model, and where the state lives."""
  config: ml_collections.ConfigDict
  family: object  # models/<name>
  model: nn.Module
  mesh: jax.sharding.Mesh
  rules: tuple
  state_shardings: dict
  batch_sharding: jax.sharding.NamedSharding


def first_segments(config: ml_collections.ConfigDict, split: str, rows: int, samples: int,
                   **updates) -> dict:
  """The first `rows` segments of `split` (fewer if the split is shorter), each cropped to its
  first `samples`, as one host batch of config.input with `updates` (e.g. encoding='float'):
  the fixed references an evaluator reads once."""
  c = ml_collections.ConfigDict(config.input.to_dict())
  c.update(split=split, batch_size=rows, crop_samples=samples, shuffle=False, num_epochs=1,
           drop_remainder=False, worker_count=0, seed=config.seed, **updates)
  batch = next(pipeline.make_batches(c, shard_index=0, shard_count=1))
  n = int(np.sum(batch['mask']))
  return {k: np.asarray(v)[:n] for k, v in batch.items()}


def types() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(__path__))


def module(type_name: str, where: str = 'config.evals'):
  """experiments/evaluators/<type_name>.py; ValueError naming the valid types."""
  if type_name not in types():
    raise ValueError(f'{where}.type={type_name!r}: expected one of {", ".join(types())}')
  return importlib.import_module(f'{__name__}.{type_name}')


def create(context: Context, name: str, entry: ml_collections.ConfigDict, **overrides):
  """The evaluator of config.evals.<name> (with `overrides` of its keys)."""
  kwargs = dict(entry.to_dict() if hasattr(entry, 'to_dict') else entry)
  kwargs.update(overrides)
  if 'type' not in kwargs:
    raise ValueError(f'config.evals.{name}: expected a `type` key (one of {", ".join(types())})')
  mod = module(kwargs.pop('type'), f'config.evals.{name}')
  kwargs.pop('every_steps', None)
  if context is not None and kwargs.get('batch_size') is not None:  # before any step runs
    key = '--batch_size' if overrides.get('batch_size') is not None else (
        f'config.evals.{name}.batch_size')
    pipeline.batch_shards(kwargs['batch_size'], context.batch_sharding, key)
  try:
    return mod.Evaluator(context, **kwargs)
  except TypeError as e:  # an unknown keyword
    raise ValueError(f'config.evals.{name}: {e}') from None


def create_all(context: Context) -> dict:
  """{name: (evaluator, every_steps)} of config.evals, for those with every_steps > 0."""
  out = {}
  for name, entry in context.config.evals.items():
    every = entry.get('every_steps', 0)
    if every:
      out[name] = (create(context, name, entry), every)
  return out
