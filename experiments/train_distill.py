r"""Trains a distillation student (Parallel WaveNet, ClariNet) against a frozen teacher run.

    python -m experiments.train_distill --config=experiments/configs/parallel_wavenet.py:runlocal \
        --config.teacher_workdir=/tmp/pw_teacher --workdir=/tmp/pw

The teacher is read from its workdir by the model-free checkpoint load (experiments/
checkpoint.py `load`, its latest checkpoint): its saved config replaces `config.teacher` (so
`models.create` builds the teacher the run trained, and the student must read the same data),
and its parameters become the student's model state collection 'teacher'. From there it is
train.py's loop and step (`train_and_evaluate(..., game=)`): one optimiser over the student's
'params', the family's `loss` (the KL to the teacher and the auxiliary losses,
models/layers/distillation.py), sharded over the mesh like any batch, checkpointed with the
teacher inside the state, so that a resumed run needs nothing but its own workdir's
checkpoints (and restores bit-identical).
"""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import checkpoint
from experiments import train
import models


def with_teacher(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, dict]:
  """(`config` with `teacher` the teacher run's saved config, the teacher's parameters as host
  arrays) from `config.teacher_workdir`."""
  if not config.get('teacher_workdir'):
    raise ValueError('config.teacher_workdir is not set: the workdir of the trained teacher '
                     '(e.g. experiments/configs/wavenet.py:mel,teacher=mixture,runlocal)')
  try:
    state, teacher = checkpoint.load(config.teacher_workdir, keys=('params',))
  except FileNotFoundError as e:
    raise ValueError(f'config.teacher_workdir={config.teacher_workdir!r}: no checkpoint to '
                     f'load ({e})') from None
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked, to take the teacher's
  config.teacher = teacher
  return config, state['params']


def init_fn_with(values: dict, collection: str = 'teacher'):
  """The game's init_fn: train.py's state with the model state `collection` set to `values`
  (host arrays: a frozen teacher's trained parameters, or a hierarchy's frozen levels,
  experiments/train_vqvae.py) in place of the random ones of the family's `init`."""
  def init_fn(config, family, model):
    base = train.init_fn(config, family, model)

    def init(rng):
      state = base(rng)
      boxed = state['model_state'][collection]
      shapes = jax.tree.map(np.shape, nn.unbox(boxed))
      given = jax.tree.map(np.shape, values)
      if shapes != given:
        source = config.get('teacher_workdir') or config.get('below_workdir')
        raise ValueError(f'the variables loaded from {source!r} do not fit the model '
                         f'state {collection!r} that its config.json describes')
      state['model_state'][collection] = jax.tree.map(
          lambda b, v: b.replace_boxed(jnp.asarray(v)) if isinstance(
              b, nn.meta.AxisMetadata) else jnp.asarray(v), boxed, values,
          is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
      return state
    return init
  return init_fn


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """train.train_and_evaluate of a student with its teacher loaded (module docstring)."""
  if not hasattr(models.family(config.model_name), 'teacher_of'):
    raise ValueError(f'config.model_name={config.model_name!r} is not a distillation student '
                     '(no teacher_of): train it with experiments/train.py')
  config, teacher_params = with_teacher(config)
  game = types.SimpleNamespace(init_fn=init_fn_with(teacher_params), make_step=train.make_step)
  return train.train_and_evaluate(config, workdir, game=game)


if __name__ == '__main__':
  train.run_job('train_distill', train_and_evaluate)
