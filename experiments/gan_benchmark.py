"""`python -m experiments.benchmark --what=gan`: the GAN generators' synthesis speed at paper
size and at runlocal size, and the GAN trainer's throughput at runlocal size.

Every model has random parameters (speed does not depend on their values). The mel vocoders
(MelGAN, HiFi-GAN V1 and V3) render random log-mel frames with their `generate`, the whole clip
in one window (experiments/flow_benchmark.py `synthesis`); WaveGAN and SpecGAN draw clips of
16,384 samples from noise (SpecGAN's include its 16 Griffin-Lim iterations). kHz = streams x
samples / median seconds after a compiling call; the real-time factor is that over the sample
rate; `--repeats` windows, the median reported. Training is one jitted step of experiments/train_gan.py (the discriminator's steps and
the generator's) on a random batch of the runlocal config.
"""

from absl import flags
from absl import logging
import jax

from data import specs
from experiments import flow_benchmark
from experiments import state as state_lib
from experiments import train_gan
import models

VOCODERS = (('melgan', ''), ('hifigan', ''), ('hifigan', 'version=v3'), ('melgan', 'runlocal'),
            ('hifigan', 'runlocal'))
CLIP_MODELS = (('wavegan', ''), ('specgan', ''), ('wavegan', 'runlocal'),
               ('specgan', 'runlocal'))


def define_flags() -> None:
  """The --what=gan flags of experiments/benchmark.py."""
  flags.DEFINE_float('gan_seconds', 2.0, 'gan: seconds each mel vocoder renders.')
  flags.DEFINE_integer('gan_clips', 2, 'gan: clips WaveGAN and SpecGAN draw (as streams).')
  flags.DEFINE_integer('gan_train_steps', 2, 'gan: training steps per timed window.')


def bench(median_time) -> dict:
  f = flags.FLAGS
  figures = measure(f.gan_seconds, f.gan_clips, f.gan_train_steps, f.repeats, median_time)
  if jax.process_index() == 0:
    print(flow_benchmark.table(figures['gan']))
  return figures


def clip_synthesis(config, clips: int, repeats: int, median_time) -> dict:
  """{'parameters' (the generator's), 'synthesis_khz', 'realtime_factor'} of `clips` clips."""
  family, model = models.family(config.model_name), models.create(config)
  variables = jax.jit(lambda r: family.init(model, r, specs.zeros_batch(config.input, 1)))(
      jax.random.key(0))
  rate, n = specs.sample_rate(config.input), model.clip_samples

  def run():
    for chunk in family.generate(model, variables, jax.random.key(1), n, batch=clips,
                                 chunk_samples=n):
      assert chunk.shape == (clips, n)

  run()  # compile
  t = median_time(run, repeats)
  return {'parameters': state_lib.count_params(variables['params']['generator']),
          'sample_rate': rate, 'synthesis_samples': n, 'synthesis_streams': clips,
          'synthesis_khz': clips * n / t / 1e3, 'realtime_factor': clips * n / t / rate}


def measure(seconds: float, clips: int, steps: int, repeats: int, median_time) -> dict:
  """{'gan': {label: figures}}, labels '<family>[:<arg>]'; 'parameters' counts the generator
  alone (what synthesis runs)."""
  out = {}
  for name, arg in VOCODERS + CLIP_MODELS:
    config = flow_benchmark._config(name, arg)  # pylint: disable=protected-access
    label = f'{name}:{arg}' if arg else name
    if (name, arg) in VOCODERS:
      figures = flow_benchmark.synthesis(config, seconds, 1, repeats, median_time)
      figures['parameters'] = _generator_parameters(config)
    else:
      figures = clip_synthesis(config, clips, repeats, median_time)
    if arg == 'runlocal':
      figures.update(flow_benchmark.training(config, None, None, steps, repeats, median_time,
                                             game=train_gan))
    logging.info('%s: %.1f kHz, %.2f x real time', label, figures['synthesis_khz'],
                 figures['realtime_factor'])
    out[label] = figures
  return {'gan': out}


def _generator_parameters(config) -> int:
  family, model = models.family(config.model_name), models.create(config)
  shapes = jax.eval_shape(lambda r: family.init(model, r, specs.zeros_batch(config.input, 1)),
                          jax.random.key(0))
  return state_lib.count_params(shapes['params']['generator'])
