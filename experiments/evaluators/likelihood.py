"""Bits per sample over a split: the family's loss metrics, averaged over every sample.

    config.evals.validation = dict(type='likelihood', every_steps=1000, split='validation',
                                   batches=8, batch_size=16, crop_samples=None)

Every segment of the split once, in order (or its first `batches` global batches), each from
silence: a code model's position 0 of a segment is context only, so a split of segments of
N_i samples counts sum(N_i - 1) predicted samples. `crop_samples` scores one random crop of
each segment instead (seeded, the same crops every time). The result is the family's metrics
('nll' in nats, 'bits_per_sample', ...) weighted by their 'weight' over the whole split, and
'samples', the total weight. Batch i draws with fold_in(key(config.seed), i), so a family whose
loss draws noise scores the same every time.

`baseline()`: for coded audio, the entropy of the split's code histogram in bits (what a model
that ignores context scores); for performance events, that of its event histogram.

An events model (kind 'symbolic', models/__init__.py) is scored the same way on
data/events_pipeline.eval_batches: every piece once, in consecutive windows of input.window
events, each from the start token; its metrics are per event ('nll', 'bits_per_event').
"""

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from data import events_pipeline
from data import inputs
from data import pipeline
from data import specs
from experiments import state as state_lib


class Evaluator:
  """Likelihood metrics of a family over a split."""

  def __init__(self, context, split: str = 'validation', batch_size: int = 16,
               crop_samples: int | None = None, batches: int | None = None):
    self.context, self.split, self.batch_size = context, split, batch_size
    self.crop_samples, self.batches = crop_samples, batches
    c = context
    seed = c.config.seed

    def eval_step(state, batch, i):
      rng = jax.random.fold_in(jax.random.key(seed), i)
      with nn.logical_axis_rules(c.rules):
        _, metrics, _ = c.family.loss(c.model, state_lib.variables(state), batch, rng)
      return metrics

    self._step = jax.jit(eval_step, in_shardings=(_eval_part(c.state_shardings),
                                                  c.batch_sharding, None))

  def run(self, state: dict) -> dict:
    """The split's metrics for `state` (a train state; only its variables are read)."""
    state = _eval_part(state)
    sums, weight = {}, 0.
    batches = inputs.eval_batches(self.context.config.input, self.split, self.batch_size,
                                    self.crop_samples, self.context.batch_sharding, self.batches)
    with jax.set_mesh(self.context.mesh):
      outs = [self._step(state, batch, np.int32(i)) for i, batch in enumerate(batches)]
    for m in jax.device_get(outs):
      w = float(m.pop('weight'))
      weight += w
      for k, v in m.items():
        sums[k] = sums.get(k, 0.) + float(v) * w
    out = {k: v / max(weight, 1.) for k, v in sums.items()}
    out['samples'] = int(weight)
    return out

  def baseline(self) -> dict:
    """{'marginal_entropy_bits'} for coded audio (per code) and events (per event), else {}."""
    input_config = self.context.config.input
    if specs.is_events(input_config):
      return {'marginal_entropy_bits': events_pipeline.marginal_entropy_bits(input_config,
                                                                             self.split)}
    if input_config.encoding == 'float':
      return {}
    return {'marginal_entropy_bits': marginal_entropy_bits(input_config, self.split)}


def _eval_part(state: dict) -> dict:
  """The parts of a train state that evaluation reads."""
  return {k: state[k] for k in ('params', 'model_state') if k in state}


def marginal_entropy_bits(input_config: ml_collections.ConfigDict, split: str) -> float:
  """Entropy of the code marginal over every sample of `split`, in bits: the baseline NLL of a
  model that ignores context."""
  c = ml_collections.ConfigDict(input_config.to_dict())
  c.update(split=split, batch_size=jax.process_count(), crop_samples=None, shuffle=False,
           num_epochs=1, drop_remainder=False, worker_count=0, frame_features=())
  counts = np.zeros(2 ** c.bits, np.int64)
  for batch in pipeline.make_batches(c, shard_index=0, shard_count=1):
    counts += np.bincount(batch['audio'][batch['mask']].ravel(), minlength=counts.size)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log2(p)).sum())
