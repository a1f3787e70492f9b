"""What every experiment config shares: argument parsing, the sections every trainer reads,
and the runlocal settings.

Configs import no JAX, grain or TFDS (a test holds them to it): `launch/sweep.py` reads them on
a login node, and a typo in one shows without starting a backend. The data facts come from
data/specs.py, which is plain Python.
"""

import copy
import importlib.util
import os

import ml_collections

from data import specs


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
  c.input = specs.input_config()
  c.model_name = ''  # models/<model_name>
  # Model(**c.model); models.create adds the data facts (sample rate, hop, encoding, number of
  # classes, conditioning width) from c.input: set them there, not here.
  c.model = ml_collections.ConfigDict()

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
  # A run whose loss runs away stops with its last good checkpoint (runtime.DivergenceGuard):
  # `checks` log steps in a row with the loss above `factor` x its running median (over the
  # last `window` good log steps) or bits_per_sample above input.bits + `bits_margin`.
  c.divergence = ml_collections.ConfigDict(
      {'factor': 10.0, 'checks': 3, 'window': 50, 'bits_margin': 8.0})

  # Mesh axes and their sizes (-1: all remaining devices), and logical-to-mesh rules.
  c.mesh = ml_collections.ConfigDict({'data': -1, 'model': 1})
  c.sharding_rules = (('batch', 'data'), ('mlp', 'model'), ('time', None), ('embed', None),
                      ('skip', None), ('vocab', None), ('cond', None))

  # Evaluators by name (experiments/evaluators/<type>.py), each run every `every_steps` and at
  # the last step (0: never); experiments/evaluate.py runs them over a workdir's checkpoints.
  c.evals = ml_collections.ConfigDict()
  c.evals.validation = likelihood_eval()
  c.evals.sample = samples_eval()

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


def likelihood_eval(every_steps: int = 1000, split: str = 'validation', batches: int = 8,
                    batch_size: int = 16) -> ml_collections.ConfigDict:
  """Bits per sample on `batches` global batches of `split` (evaluate.py: the whole split)."""
  return ml_collections.ConfigDict({
      'type': 'likelihood', 'every_steps': every_steps, 'split': split, 'batches': batches,
      'batch_size': batch_size,
      'crop_samples': ml_collections.config_dict.placeholder(int)})  # None: whole segments


def samples_eval(every_steps: int = 5000, seconds: float = 2.0) -> ml_collections.ConfigDict:
  """An audio clip and its spectrogram to TensorBoard."""
  return ml_collections.ConfigDict({'type': 'samples', 'every_steps': every_steps,
                                    'seconds': seconds, 'temperature': 1.0,
                                    'split': 'validation'})


def spectral_eval(every_steps: int = 5000, split: str = 'validation', clips: int = 8,
                  seconds: float = 2.0, griffin_lim_iters: int = 64) -> ml_collections.ConfigDict:
  """A mel vocoder against Griffin-Lim on the same mel: spectral distances to the reference
  (experiments/evaluators/spectral.py)."""
  return ml_collections.ConfigDict({'type': 'spectral', 'every_steps': every_steps,
                                    'split': split, 'clips': clips, 'seconds': seconds,
                                    'griffin_lim_iters': griffin_lim_iters,
                                    'temperature': 1.0})


def runlocal(c: ml_collections.ConfigDict, total_steps: int, learning_rate: float,
             microbatches: int, evals_every: int, log_every: int) -> None:
  """The laptop settings every family shares: the embedded corpus at 16 kHz (built on first
  use), batch 8 x 2,048 samples, validation on 4 batches of 8 crops of 8,192 samples, a 1 s
  sample at the end, checkpoints with each validation."""
  c.input.dataset = '16k'
  c.input.manual_dir = None
  c.input.batch_size = 8
  c.input.crop_samples = 2048
  c.microbatches = microbatches
  c.total_steps = total_steps
  c.log_every_steps = log_every
  c.optim.learning_rate = learning_rate
  c.optim.warmup_steps = 50
  c.evals.validation.update(every_steps=evals_every, batches=4, batch_size=8, crop_samples=8192)
  c.evals.sample.update(every_steps=total_steps, seconds=1.0)
  c.checkpoint.every_steps = evals_every
  c.checkpoint.keep_every = 0


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


MEL_VOCODER_DATA = ('16k', '22k')


def mel_vocoder(c: ml_collections.ConfigDict, data: str, runlocal: bool,
                temperature: float = 0.6) -> None:
  """The input and evaluations of a flow mel vocoder (float audio, 'mel' frames).

  data '16k': MAESTRO at 16 kHz, 80 mels of 2,048-sample windows at the dataset's 512-sample
  hop over 0-8 kHz, log floor 1e-5 (WaveGlow's); '22k': the published vocoders' setting,
  22,050 Hz, 80 mels of 1,024-sample windows at a 256-sample hop over 0-8 kHz, log floor 1e-5;
  both in crops of 16,384 samples. `runlocal` (after `runlocal(c, ...)`, whose data and crops
  it keeps): the mel of WaveNet's `mel,runlocal` (log floor 0.01), so their spectral figures
  compare, and the `spectral` evaluator on 4 x 1 s of validation at the end. Samples (the `samples` and
  `spectral` evaluations) are drawn at `temperature` (WaveGlow's sigma 0.6).
  """
  if data not in MEL_VOCODER_DATA:
    raise ValueError(f'config argument data={data!r}: expected one of '
                     f'{", ".join(MEL_VOCODER_DATA)}')
  c.input.encoding = 'float'
  c.input.bits = 16
  c.input.frame_features = ('mel',)
  if not runlocal:
    c.input.crop_samples = 16384
  if data == '22k' and not runlocal:
    c.input.dataset = 'sr22050_seg88064_hop256'  # 344 frames of 256 samples, ~4 s
    c.input.mel.update(n_fft=1024, win_length=1024, fmax=8000.)
  c.evals.resynthesis = spectral_eval()
  c.evals.resynthesis.temperature = temperature
  c.evals.sample.temperature = temperature
  if runlocal:
    c.input.mel.floor = 0.01
    c.evals.resynthesis.update(every_steps=c.total_steps, clips=4, seconds=1.0)


def gan(c: ml_collections.ConfigDict, learning_rate: float, b1: float, b2: float,
        discriminator_steps: int = 1) -> None:
  """The sections of experiments/train_gan.py: `optim` is the generator's optimiser and
  `optim_discriminator` the discriminator's (both constant-rate Adam at `learning_rate`,
  betas b1, b2, no clipping, as the GAN papers train); each generator step follows
  `discriminator_steps` discriminator steps, each on its own slice of the batch. No likelihood
  evaluation (a GAN has none)."""
  c.optim.update(learning_rate=learning_rate, b1=b1, b2=b2, decay='constant', warmup_steps=0,
                 clip_norm=0.0)
  c.optim_discriminator = ml_collections.ConfigDict(c.optim.to_dict())
  c.discriminator_steps = discriminator_steps
  c.divergence.factor = 0.0  # a game's losses swing and change sign: no median rule
  del c.evals['validation']


def clip_gan(c: ml_collections.ConfigDict, runlocal: bool) -> None:
  """The input and evaluations of an unconditional clip GAN (WaveGAN, SpecGAN): float crops
  of 16,384 samples (1.024 s at 16 kHz), the WGAN-GP recipe (Adam 1e-4, betas (0.5, 0.9), 5
  critic steps per generator step, each on its own 64 rows: batches of 320), the
  `clip_statistics` evaluator. `runlocal` (after `runlocal(c, ...)`, whose data it keeps):
  batches of 8 in 2 critic steps of 4, the statistics of 16 clips every 500 steps."""
  c.input.encoding = 'float'
  c.input.bits = 16
  c.input.crop_samples = 16384
  c.input.batch_size = 8 if runlocal else 320
  c.model.clip_samples = 16384
  gan(c, learning_rate=c.optim.learning_rate if runlocal else 1e-4, b1=0.5, b2=0.9,
      discriminator_steps=2 if runlocal else 5)
  c.evals.sample.seconds = 1.024
  c.evals.statistics = ml_collections.ConfigDict({
      'type': 'clip_statistics', 'every_steps': 500 if runlocal else 5000,
      'split': 'validation', 'clips': 16 if runlocal else 64, 'seconds': 1.024})


def distillation(c: ml_collections.ConfigDict, teacher: ml_collections.ConfigDict,
                 runlocal: bool) -> None:
  """A distillation student's teacher, data and evaluations (experiments/train_distill.py).

  `c.teacher` is the teacher's run config (a `wavenet.py:mel,teacher=...` variant):
  train_distill replaces it with the config saved in `c.teacher_workdir`, the run whose
  parameters it loads. The student reads the teacher's data (its dataset, crops and mel) as
  float audio; the `spectral` evaluator vocodes validation mels (at runlocal: 4 x 1 s at the
  end, as every runlocal vocoder), and the `likelihood` evaluator reports the distillation
  metrics on validation crops, among them the teacher's bits per sample of the student's
  samples and of the data.
  """
  c.teacher = teacher
  c.teacher_workdir = ml_collections.config_dict.placeholder(str)
  c.input = copy.deepcopy(teacher.input)
  c.input.encoding = 'float'
  c.input.bits = 16
  c.divergence.factor = 0.0  # a KL estimate near 0 that changes sign: no median rule
  c.evals.resynthesis = spectral_eval()
  if runlocal:
    c.evals.resynthesis.update(every_steps=c.total_steps, clips=4, seconds=1.0)
