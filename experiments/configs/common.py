"""What every experiment config shares: argument parsing and the sections every trainer reads."""

import importlib.util
import os

import ml_collections

from data import pipeline


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'runlocal,variant=midi' -> {runlocal: True, variant: 'midi'} over `defaults`.

  Bare words are flags set to True; key=value pairs take the type of the default. Unknown keys
  are errors, so that a typo does not silently select the default.
  """
  out = dict(defaults)
  for part in filter(None, (arg or '').split(',')):
    key, eq, val = part.partition('=')
    if key not in defaults:
      raise ValueError(f'config argument {key!r}: expected one of {", ".join(defaults)}')
    default = defaults[key]
    if not eq:
      out[key] = True
    elif isinstance(default, bool):
      out[key] = val.lower() in ('1', 'true', 'yes')
    else:
      out[key] = type(default)(val) if default is not None else val
  return ml_collections.ConfigDict(out)


def base_config() -> ml_collections.ConfigDict:
  """The trainer's sections with their defaults; experiment files override what they need."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 100_000
  c.log_every_steps = 100
  # Gradients accumulated over this many slices of each batch: less activation memory, and on
  # CPUs activations that stay in cache (faster); 1 on accelerators unless memory is short.
  c.microbatches = 1
  c.input = pipeline.default_config()
  c.model_name = ''
  c.model = ml_collections.ConfigDict()
  # Batch keys fed to the model: frame features concatenated as local conditioning (velocities
  # scaled to [0, 1]), and an int32 [B] key of global ids (None: unconditional).
  c.local_features = ()
  c.global_key = ml_collections.config_dict.placeholder(str)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adam'  # 'adam' or 'adamw'
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 1000
  c.optim.decay = 'cosine'  # 'cosine' (to end_factor x peak at total_steps) or 'constant'
  c.optim.end_factor = 0.01
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.0  # adamw only
  c.optim.clip_norm = 1.0  # global-norm clipping; 0: none
  c.optim.max_consecutive_nonfinite = 10  # non-finite updates skipped before the run fails

  # Mesh axes and their sizes (-1: all remaining devices), and logical-to-mesh rules.
  c.mesh = ml_collections.ConfigDict({'data': -1, 'model': 1})
  c.sharding_rules = (('batch', 'data'), ('mlp', 'model'), ('time', None), ('embed', None),
                      ('skip', None), ('vocab', None), ('cond', None))

  c.evals = ml_collections.ConfigDict()
  c.evals.split = 'validation'
  c.evals.every_steps = 1000
  c.evals.batches = 8  # batches of the periodic validation (evaluate.py reads the whole split)
  c.evals.batch_size = 16
  c.evals.crop_samples = ml_collections.config_dict.placeholder(int)  # None: whole segments
  c.evals.sample_every_steps = 5000  # audio + spectrogram to TensorBoard; 0: never
  c.evals.sample_seconds = 2.0
  c.evals.temperature = 1.0

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 1000
  c.checkpoint.keep = 3  # the last N
  c.checkpoint.keep_every = 10_000  # and every K-th step; 0: none
  c.checkpoint.async_save = True

  # Resume order: the workdir's latest checkpoint, then `resume` (another run's workdir: its
  # latest state and data position), then `init_from` (another workdir: parameters only), then
  # scratch.
  c.resume = ml_collections.config_dict.placeholder(str)
  c.init_from = ml_collections.config_dict.placeholder(str)
  return c


def load_module(path: str):
  """The experiment file at `path` as a module (its get_config, and sweep if it has one)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'config file {path} does not exist')
  spec = importlib.util.spec_from_file_location('_experiment_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(spec: str) -> ml_collections.ConfigDict:
  """'path/to/config.py:arg' -> its locked ConfigDict (as --config= would give)."""
  path, _, arg = spec.partition(':')
  module = load_module(path)
  config = module.get_config(arg) if arg else module.get_config()
  config.lock()
  return config
