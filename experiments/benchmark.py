r"""Throughput and latency figures, written as JSON with a description of the machine.

    python -m experiments.benchmark --what=input --json=/tmp/input.json

--what=input measures
  * the preparation rate: the embedded corpus generated from scratch (seconds of wall time), then
    built into the Maestro TFDS dataset (config --dataset) by `--prepare_workers` processes,
    reported as seconds of audio built per second of wall time;
  * the input pipeline's throughput in audio samples/s (batch x crop samples delivered as global
    jax.Arrays on the default device layout), for each grain `--worker_count`; the median over
    `--repeats` timed windows of `--batches` batches each, after a warm-up;
  * the matmul peak of this machine (float32, GFLOP/s) and what one training step of the
    30-layer, 64-channel WaveNet (kernel 2, 128 gate and 64 skip channels, 256-way softmax) would
    consume at that peak, from its FLOPs per sample: the pipeline's headroom is the ratio.

--what=train measures one jitted training step of `--config` (default the `peer` WaveNet:
30 layers, 64/128/64 channels, batch 4 x 8,000 samples) on synthetic codes, over every device:
  * train_samples_per_s: batch x crop audio samples per second (median over `--repeats`
    windows of `--steps` steps, after compilation and a warm-up);
  * the matmul FLOPs per sample (2 x the multiply-adds of every per-sample kernel, x 3 for the
    backward pass), the GFLOP/s they amount to, and their fraction of the machine's measured
    float32 matmul peak.

--what=sampler measures the cached sampler (per-layer queues, lax.scan) of `--config`'s model
with random parameters, for 1 and 16 streams, in samples/s summed over the streams, and the
realtime factor at the dataset's sample rate (samples/s per stream / rate); and the naive
sampler that recomputes the whole receptive field each step, for one stream.
"""

import json
import os
import platform
import statistics
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp

import flax.linen as nn
from ml_collections import config_flags
import numpy as np

from data import corpus
from data import maestro
from data import pipeline
from experiments import sharding
from experiments import train

_WHAT = flags.DEFINE_enum('what', 'input', ['input', 'train', 'sampler'], 'What to measure.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', 'experiments/configs/wavenet.py:peer', 'Experiment config (train, sampler).',
    lock_config=True)
_STEPS = flags.DEFINE_integer('steps', 5, 'Training steps per timed window.')
_SAMPLES = flags.DEFINE_list('sampler_samples', ['16000', '4000'],
                             'Samples per stream generated per timed window, for 1 and 16 '
                             'streams.')
_NAIVE_SAMPLES = flags.DEFINE_integer('naive_samples', 20, 'Steps of the naive sampler.')
_JSON = flags.DEFINE_string('json', None, 'Write the figures to this JSON file.')
_DATASET = flags.DEFINE_string('dataset', '16k', 'Maestro builder config.')
_BATCH = flags.DEFINE_integer('batch_size', 16, 'Global batch.')
_CROP = flags.DEFINE_integer('crop_samples', 3070 + 8000,
                             'Samples per example: the WaveNet receptive field + 8000 targets.')
_WORKERS = flags.DEFINE_list('worker_count', ['0', '2'], 'grain worker counts to measure.')
_PREPARE_WORKERS = flags.DEFINE_integer('prepare_workers', 2, 'Dataset preparation processes.')
_BATCHES = flags.DEFINE_integer('batches', 20, 'Batches per timed window.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed windows (the median is reported).')
_PIECES = flags.DEFINE_integer('corpus_pieces', 32, 'Pieces of the generated corpus.')


def describe_machine() -> dict:
  """What the figures were measured on."""
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
  except (OSError, StopIteration):
    pass
  try:
    memory_gb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
  except (ValueError, OSError):
    memory_gb = None
  return {
      'cpu': cpu, 'cpu_count': os.cpu_count(), 'memory_gb': memory_gb,
      'platform': platform.platform(), 'python': platform.python_version(),
      'jax': jax.__version__, 'backend': jax.default_backend(),
      'devices': [str(d.device_kind) for d in jax.devices()],
      'process_count': jax.process_count(),
  }


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
  """Median float32 GFLOP/s of an n x n matmul on the default device."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / statistics.median(times) / 1e9


def wavenet_train_flops_per_sample(layers=30, residual=64, gate=128, skip=64, kernel=2,
                                   classes=256) -> float:
  """Forward + backward FLOPs (3x the forward) per audio sample of a WaveNet."""
  per_layer = kernel * residual * gate + (gate // 2) * residual + (gate // 2) * skip  # MACs
  head = skip * skip + skip * classes
  stem = kernel * classes * residual  # causal input convolution of one-hot codes
  return 3 * 2 * (layers * per_layer + head + stem)


def measure_preparation(config_name: str, workers: int, root: str, pieces: int) -> dict:
  t = time.perf_counter()
  manual_dir = os.path.join(root, 'corpus')
  corpus.write_corpus(manual_dir, num_pieces=pieces)
  generated = time.perf_counter() - t
  t = time.perf_counter()
  builder = maestro.prepare(config_name, manual_dir=manual_dir,
                            data_dir=os.path.join(root, 'tfds'), num_workers=workers)
  built = time.perf_counter() - t
  pieces, _ = maestro.read_csv(maestro.find_csv(manual_dir))
  seconds = sum(p.duration for p in pieces)
  return {'corpus_generation_s': generated, 'corpus_audio_s': seconds,
          'corpus_pieces': len(pieces), 'preparation_s': built,
          'preparation_audio_s_per_s': seconds / built, 'preparation_workers': workers,
          'data_dir': str(builder.data_dir_root), 'manual_dir': manual_dir}


def measure_input(config, batches: int, repeats: int) -> float:
  """Median audio samples/s delivered as global arrays."""
  mesh = jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  it = pipeline.make_batches(config, sharding)
  for _ in range(5):
    jax.block_until_ready(next(it))
  rates = []
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(batches):
      b = next(it)
    jax.block_until_ready(b)
    rates.append(batches * config.batch_size * config.crop_samples / (time.perf_counter() - t))
  return statistics.median(rates)


def bench_input() -> dict:
  out = {}
  with tempfile.TemporaryDirectory() as root:
    prep = measure_preparation(_DATASET.value, _PREPARE_WORKERS.value, root, _PIECES.value)
    logging.info('preparation: %s', prep)
    out.update({k: v for k, v in prep.items() if not k.endswith('_dir')})
    config = pipeline.default_config()
    config.update(dataset=_DATASET.value, manual_dir=prep['manual_dir'],
                  data_dir=prep['data_dir'], batch_size=_BATCH.value,
                  crop_samples=_CROP.value)
    by_workers = {}
    for w in map(int, _WORKERS.value):
      config.worker_count = w
      by_workers[str(w)] = measure_input(config, _BATCHES.value, _REPEATS.value)
      logging.info('input, %d workers: %.0f samples/s', w, by_workers[str(w)])
  peak = matmul_peak_gflops()
  flops = wavenet_train_flops_per_sample()
  need = peak * 1e9 / flops
  best = max(by_workers.values())
  out.update({
      'input_batch_size': _BATCH.value, 'input_crop_samples': _CROP.value,
      'input_samples_per_s_by_workers': by_workers, 'input_samples_per_s': best,
      'matmul_peak_gflops': peak, 'wavenet_30x64_train_flops_per_sample': flops,
      'wavenet_30x64_samples_per_s_at_matmul_peak': need,
      'input_headroom_over_wavenet_at_peak': best / need,
  })
  return out


def model_train_flops_per_sample(config) -> float:
  """Matmul FLOPs per audio sample of one training step: 2 x 3 x the multiply-adds of every
  kernel applied once per sample (the one-hot stem is a gather; conditioning runs per frame)."""
  model = train.create_model(config)
  params = train.abstract_state(config, model)['params']
  per_sample = sum(v.size for k, v in params.items() if k.endswith('_kernel') and not (
      k.startswith(('stem_', 'local_')) or k.endswith(('_global_kernel', '_local_kernel'))))
  return 6. * per_sample


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def bench_train() -> dict:
  config = _CONFIG.value
  model = train.create_model(config)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config)
  state, shardings = train.create_state(config, model, mesh, rules)
  batch_sh = sharding.batch_sharding(mesh, rules)
  b, t = config.input.batch_size, config.input.crop_samples
  rng = np.random.default_rng(0)
  batch = {'audio': rng.integers(0, 2 ** config.input.bits, (b, t)).astype(np.int32)}
  if config.local_features:
    f = t // model.hop_length
    for k in config.local_features:
      batch[k] = rng.integers(0, 2, (b, f, 88)).astype(np.uint8)
  batch = jax.device_put(batch, batch_sh)
  step = train.make_train_step(config, model, train.make_optimizer(config), rules, shardings,
                               batch_sh)
  with jax.set_mesh(mesh):
    holder = [state]

    def run():
      for _ in range(_STEPS.value):
        holder[0], m = step(holder[0], batch)
      jax.block_until_ready(m)

    run()  # compile + warm-up
    seconds = _median_time(run, _REPEATS.value) / _STEPS.value
  rate = b * t / seconds
  flops = model_train_flops_per_sample(config)
  peak = matmul_peak_gflops()
  logging.info('train: %.0f samples/s, %.1f GFLOP/s of %.1f peak', rate, rate * flops / 1e9,
               peak)
  return {'train_batch_size': b, 'train_crop_samples': t, 'train_step_s': seconds,
          'train_samples_per_s': rate, 'train_flops_per_sample': flops,
          'train_gflops_per_s': rate * flops / 1e9, 'matmul_peak_gflops': peak,
          'train_fraction_of_matmul_peak': rate * flops / 1e9 / peak,
          'parameters': int(sum(np.prod(v.shape) for v in jax.tree.leaves(state['params'])))}


def bench_sampler() -> dict:
  config = _CONFIG.value
  model = train.create_model(config)
  module = train.model_module(config)
  if config.local_features or config.global_key:
    raise app.UsageError('--what=sampler measures unconditional models; pick such a --config')
  variables = {'params': nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))[
      'params'])}
  rate = train.sample_rate(config)
  out = {'sample_rate': rate, 'receptive_field': model.receptive_field}
  for streams, n in zip((1, 16), map(int, _SAMPLES.value)):
    def run(streams=streams, n=n):
      for chunk in module.generate(model, variables, jax.random.key(1), n, batch=streams,
                                   chunk_samples=n):
        assert chunk.shape == (streams, n)

    run()  # compile
    sps = streams * n / _median_time(run, _REPEATS.value)
    key = f'sampler_{streams}_stream{"s" if streams > 1 else ""}_samples_per_s'
    out[key] = sps
    out[key.replace('samples_per_s', 'realtime_factor')] = sps / streams / rate
    logging.info('cached sampler, %d streams: %.0f samples/s', streams, sps)
  window = jnp.zeros((1, model.receptive_field), jnp.int32)
  n = _NAIVE_SAMPLES.value
  naive = lambda: module.naive_generate(model, variables, jax.random.key(1), n,
                                        window).block_until_ready()
  naive()
  sps = n / _median_time(naive, _REPEATS.value)
  out.update(naive_sampler_1_stream_samples_per_s=sps,
             naive_sampler_1_stream_realtime_factor=sps / rate,
             cached_over_naive_1_stream=out['sampler_1_stream_samples_per_s'] / sps)
  logging.info('naive sampler, 1 stream: %.1f samples/s', sps)
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  figures = {'what': _WHAT.value, 'machine': describe_machine()}
  if _WHAT.value != 'input':
    figures['config'] = json.loads(_CONFIG.value.to_json_best_effort())
  figures.update({'input': bench_input, 'train': bench_train,
                  'sampler': bench_sampler}[_WHAT.value]())
  text = json.dumps(figures, indent=1, default=float)
  print(text)
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  app.run(main)
