r"""Trains a VQ-VAE level or the top prior of a hierarchy over the frozen levels below it.

    python -m experiments.train_vqvae --config=experiments/configs/vqvae.py:level=1,runlocal \
        --workdir=/tmp/vq1
    python -m experiments.train_vqvae --config=experiments/configs/vqvae.py:level=2,runlocal \
        --config.below_workdir=/tmp/vq1 --workdir=/tmp/vq2
    python -m experiments.train_vqvae \
        --config=experiments/configs/vqvae.py:prior,levels=2,runlocal \
        --config.below_workdir=/tmp/vq2 --workdir=/tmp/vq_prior

Level 1 trains as any family. Above it, `config.below_workdir` names the run of the level
just below: the model-free checkpoint load (experiments/checkpoint.py `load`, its newest
checkpoint that restores) gives its saved config and variables. Its config becomes
`config.levels.level<n - 1>` beside the levels it was itself trained over (`levels` of its own
config), so that `models.create` builds every frozen level as it was trained; its parameters and
codebook, with the frozen levels in its own model state, become this run's model state
collection 'levels'. The levels below are therefore exactly those the level below was trained
over, whatever their own workdirs hold now. From there it is train.py's loop and step
(`train_and_evaluate(..., game=)`), and the frozen levels are checkpointed inside the state:
a resumed run, its evaluation and its sampling need nothing but its own workdir.
"""

import types

import ml_collections

from experiments import checkpoint
from experiments import train
from experiments import train_distill
import models


def below_level(config: ml_collections.ConfigDict) -> int:
  """The level this run trains over: config.level - 1 for a level, config.num_levels for a
  prior."""
  return config.level - 1 if config.model_name == 'vqvae' else config.num_levels


def with_levels(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, dict]:
  """(`config` with `levels` the frozen levels' run configs, their variables
  {'level1': {'params', 'vq'}, ...} as host arrays) from `config.below_workdir` (module
  docstring); ({}: none) for level 1."""
  want = below_level(config)
  if want < 1:
    if config.get('below_workdir'):
      raise ValueError(f'config.below_workdir={config.below_workdir!r}: level 1 trains on audio, '
                       'over no level')
    return config, {}
  if not config.get('below_workdir'):
    raise ValueError(f'config.below_workdir is not set: the workdir of the trained level {want} '
                     f'(experiments/configs/vqvae.py:level={want})')
  try:
    state, below = checkpoint.load(config.below_workdir, keys=('params', 'model_state'))
  except FileNotFoundError as e:
    raise ValueError(f'config.below_workdir={config.below_workdir!r}: no checkpoint to load '
                     f'({e})') from None
  got = len(below.get('levels', {})) + 1
  if below.get('model_name') != 'vqvae' or got != want:
    what = (f'a {below.get("model_name")!r} run' if below.get('model_name') != 'vqvae'
            else f'level {got}')
    raise ValueError(f'config.below_workdir={config.below_workdir!r} holds {what}; this run '
                     f'trains over level {want}')
  levels = {k: ml_collections.ConfigDict(v.to_dict()) for k, v in below.get('levels', {}).items()}
  run = ml_collections.ConfigDict(below.to_dict())
  del run['levels']
  levels[f'level{want}'] = run
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked, to take the levels
  config.levels = levels
  frozen = dict(state.get('model_state', {}).get('levels', {}))
  frozen[f'level{want}'] = {'params': state['params'], 'vq': state['model_state']['vq']}
  return config, frozen


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """train.train_and_evaluate of a level or prior with its frozen levels loaded (module
  docstring)."""
  if not hasattr(models.family(config.model_name), 'codes_below'):
    raise ValueError(f'config.model_name={config.model_name!r} is not a VQ-VAE level or prior: '
                     'train it with experiments/train.py')
  config, frozen = with_levels(config)
  init_fn = train_distill.init_fn_with(frozen, 'levels') if frozen else train.init_fn
  return train.train_and_evaluate(config, workdir, game=types.SimpleNamespace(
      init_fn=init_fn, make_step=train.make_step))


if __name__ == '__main__':
  train.run_job('train_vqvae', train_and_evaluate)
