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

from data import corpus
from data import maestro
from data import pipeline

_WHAT = flags.DEFINE_enum('what', 'input', ['input'], 'What to measure.')
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


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  figures = {'what': _WHAT.value, 'machine': describe_machine()}
  figures.update({'input': bench_input}[_WHAT.value]())
  text = json.dumps(figures, indent=1, default=float)
  print(text)
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  app.run(main)
