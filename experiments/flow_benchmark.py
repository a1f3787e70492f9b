"""`python -m experiments.benchmark --what=flow`: the flow vocoders' synthesis speed and
training throughput, beside the mel-conditioned WaveNet's cached sampler and Griffin-Lim.

WaveGlow, FloWaveNet and WaveFlow at their paper configs and `runlocal`: synthesis (`generate`
of `--flow_streams` streams from random mels, `--flow_paper_seconds` / `--flow_seconds` of
audio, one window) in kHz and as a multiple of real time, and training samples/s (paper configs
on `--flow_train_batch` x `--flow_train_crop`, runlocal on its own batch; `--flow_train_steps`
per window); beside them the mel WaveNet's cached sampler (`mel,runlocal` and `mel`,
`--flow_wavenet_seconds`) and Griffin-Lim (64 iterations). `--repeats` windows, the median
reported.

Every model has random parameters (speed does not depend on their values) and vocodes random
log-mel frames; synthesis is the family's `generate` over the whole clip in one window (after a
call that compiles), so kHz = streams x samples / median seconds and the real-time factor is
that over the sample rate. Training is one jitted step of experiments/train.py on a random
batch.
"""

from absl import flags
from absl import logging
import jax
import numpy as np

from data import specs
from experiments import sharding
from experiments import state as state_lib
from experiments import train
from experiments.configs import common
from experiments.evaluators import spectral as spectral_eval
import models

FLOWS = ('waveglow', 'flowavenet', 'waveflow')


def define_flags() -> None:
  """The --what=flow flags of experiments/benchmark.py."""
  flags.DEFINE_float('flow_seconds', 1.0, 'flow: seconds synthesised by runlocal models.')
  flags.DEFINE_float('flow_paper_seconds', 0.5, 'flow: seconds synthesised by paper configs.')
  flags.DEFINE_float('flow_wavenet_seconds', 0.1, 'flow: seconds of the mel WaveNet sampler.')
  flags.DEFINE_integer('flow_streams', 1, 'flow: streams synthesised together.')
  flags.DEFINE_integer('flow_train_batch', 1, 'flow: batch of the paper configs\' train step.')
  flags.DEFINE_integer('flow_train_crop', 4096, 'flow: crop of the paper configs\' train step.')
  flags.DEFINE_integer('flow_train_steps', 2, 'flow: training steps per timed window.')


def bench(median_time) -> dict:
  """`measure` with the flags' settings; prints the table."""
  f = flags.FLAGS
  figures = measure(f.flow_seconds, f.flow_paper_seconds, f.flow_wavenet_seconds, f.flow_streams,
                    f.flow_train_batch, f.flow_train_crop, f.flow_train_steps, f.repeats,
                    median_time)
  if jax.process_index() == 0:
    print(table(figures['flow']))
  return figures


def _config(name: str, arg: str):
  return common.load(f'experiments/configs/{name}.py' + (f':{arg}' if arg else ''))


def _random_mel(input_config, streams: int, frames: int) -> np.ndarray:
  rng = np.random.default_rng(0)
  return rng.uniform(-8., 0., (streams, frames, input_config.mel.n_mels)).astype(np.float32)


def synthesis(config, seconds: float, streams: int, repeats: int, median_time) -> dict:
  """{'parameters', 'synthesis_khz', 'realtime_factor'} of `config`'s `generate`."""
  family, model = models.family(config.model_name), models.create(config)
  variables = jax.jit(lambda r: family.init(model, r, specs.zeros_batch(config.input, 1)))(
      jax.random.key(0))
  rate, hop = specs.sample_rate(config.input), specs.dataset(config.input.dataset).hop_length
  n = int(round(seconds * rate)) // hop * hop
  cond = {'mel': _random_mel(config.input, streams, n // hop)}

  def run():
    for chunk in family.generate(model, variables, jax.random.key(1), n, batch=streams,
                                 cond=cond, chunk_samples=n, temperature=0.6):
      assert chunk.shape == (streams, n)

  run()  # compile
  t = median_time(run, repeats)
  return {'parameters': state_lib.count_params(variables['params']), 'sample_rate': rate,
          'synthesis_samples': n, 'synthesis_streams': streams,
          'synthesis_khz': streams * n / t / 1e3, 'realtime_factor': streams * n / t / rate}


def training(config, batch: int | None, crop: int | None, steps: int, repeats: int,
             median_time, game=train) -> dict:
  """Samples/s of the jitted training step of `game` (experiments/train.py, or a trainer with
  its `init_fn` and `make_step`), on one device, on random batches of `batch` x `crop` (the
  config's unless given), `steps` steps per timed window."""
  config = config.copy_and_resolve_references()
  config.input.batch_size = batch or config.input.batch_size
  config.input.crop_samples = crop or config.input.crop_samples
  config.microbatches = 1
  config.mesh = {'data': 1, 'model': 1}
  family, model = models.family(config.model_name), models.create(config)
  mesh, rules = sharding.make_mesh(config.mesh, devices=jax.devices()[:1]), sharding.rules(config)
  init = game.init_fn(config, family, model)
  shardings = state_lib.shardings(init, mesh, rules)
  batch_sh = sharding.batch_sharding(mesh, rules)
  step = game.make_step(config, family, model, rules, shardings, batch_sh)
  b, t = config.input.batch_size, config.input.crop_samples
  rng = np.random.default_rng(0)
  data = {'audio': (rng.standard_normal((b, t)) * 0.1).astype(np.float32),
          'mel': _random_mel(config.input, b, t // specs.dataset(config.input.dataset).hop_length)}
  with jax.set_mesh(mesh):
    holder = {'state': state_lib.create(init, shardings, config.seed),
              'batch': jax.device_put(data, batch_sh)}

    def run():
      for _ in range(steps):
        holder['state'], metrics = step(holder['state'], holder['batch'])
      jax.block_until_ready(metrics['loss'])

    run()  # compile
    seconds = median_time(run, repeats) / steps
  logging.info('%s train: %.0f samples/s', config.model_name, b * t / seconds)
  return {'train_batch_size': b, 'train_crop_samples': t, 'train_step_s': seconds,
          'train_samples_per_s': b * t / seconds}


def griffin_lim(seconds: float, streams: int, n_iter: int, repeats: int, median_time) -> dict:
  """Griffin-Lim on the runlocal vocoders' mel (the spectral evaluator's reconstruction)."""
  inp = _config('waveglow', 'runlocal').input
  rate, hop = specs.sample_rate(inp), specs.dataset(inp.dataset).hop_length
  n = int(round(seconds * rate)) // hop * hop
  mel = _random_mel(inp, streams, n // hop + 1)
  run = lambda: spectral_eval.griffin_lim(mel, inp, n, n_iter, 0)
  run()
  t = median_time(run, repeats)
  return {'sample_rate': rate, 'iterations': n_iter, 'synthesis_khz': streams * n / t / 1e3,
          'realtime_factor': streams * n / t / rate}


def measure(seconds: float, paper_seconds: float, wavenet_seconds: float, streams: int,
            train_batch: int, train_crop: int, steps: int, repeats: int, median_time) -> dict:
  """The figures of `benchmark --what=flow`: {'flow': {label: figures}}, labels
  '<family>' (the paper config: synthesis over `paper_seconds`, training on `train_batch` x
  `train_crop`) and '<family>:runlocal' (synthesis over `seconds`, training on its own
  batches), 'wavenet:mel,runlocal', 'wavenet:mel' (its cached sampler, over
  `wavenet_seconds`) and 'griffin_lim' (64 iterations, the spectral evaluator's)."""
  out = {}
  for name in FLOWS:
    for arg in ('', 'runlocal'):
      config = _config(name, arg)
      label = f'{name}:{arg}' if arg else name
      figures = synthesis(config, seconds if arg else paper_seconds, streams, repeats,
                          median_time)
      figures.update(training(config, None if arg else train_batch,
                              None if arg else train_crop, steps, repeats, median_time))
      logging.info('%s: %.1f kHz, %.3f x real time', label, figures['synthesis_khz'],
                   figures['realtime_factor'])
      out[label] = figures
  for arg, secs in (('mel,runlocal', seconds), ('mel', wavenet_seconds)):
    out[f'wavenet:{arg}'] = synthesis(_config('wavenet', arg), secs, streams, repeats,
                                      median_time)
  out['griffin_lim'] = griffin_lim(seconds, streams, 64, repeats, median_time)
  return {'flow': out}


def table(figures: dict) -> str:
  """The figures as a Markdown table."""
  rows = ['| model | parameters | synthesis kHz | x real time | train samples/s |',
          '| --- | ---: | ---: | ---: | ---: |']
  for label, f in figures.items():
    params = f'{f["parameters"] / 1e6:.2f} M' if 'parameters' in f else '-'
    train_rate = f'{f["train_samples_per_s"]:,.0f}' if 'train_samples_per_s' in f else '-'
    rows.append(f'| {label} | {params} | {f["synthesis_khz"]:,.2f} | '
                f'{f["realtime_factor"]:.3f} | {train_rate} |')
  return '\n'.join(rows)
