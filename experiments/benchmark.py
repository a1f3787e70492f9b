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
  * train_samples_per_s: batch x crop samples (`train_unit`: audio, or events) per second
    (median over `--repeats` windows of `--steps` steps, after compilation and a warm-up), and
    its spread over the windows (`_range`: [least, most]);
  * the matmul FLOPs per sample (2 x the multiply-adds of every per-sample kernel, x 3 for the
    backward pass), the GFLOP/s they amount to, and their fraction of the machine's measured
    float32 matmul peak;
  * for a WaveNet whose layers run in the CPU kernel (`train_layers`: kernel, or jax), the
    same step with the pure-JAX layers in the same run (`train_jax_samples_per_s`, its share of
    the peak) and the ratio (`train_kernel_over_jax`);
  * for a VQ-VAE level or prior (experiments/configs/vqvae.py, random levels), the time its
    step spends coding the batch through the frozen levels below (`frozen_levels_s`, timed
    alone) and its fraction of the step: what codes precomputed into a dataset would save.

--what=sampler measures the family's `generate` (float audio from its cached sampler) of
`--config`'s model with random parameters, for 1 and 16 streams, and the naive sampler where
the family has one (experiments/sampler_benchmark.py).

--peer_json (train, sampler) reads the reference WaveNet's figures, measured on the same machine
(experiments/reference_benchmark.py gives the file's form), and reports beside ours its
samples/s (`<figure>_reference`) and our ratio to it (`<figure>_over_reference`).

--what=memory plans `--config`'s train step for `--mesh` (e.g. 'data:4,model:2'; axes left out
have size 1) and the config's global batch: compiled ahead of time, on that many faked CPU
devices where this machine has fewer, it reports per device the parameter, optimizer-state and
batch bytes, XLA's argument, output, aliased and temporary bytes and the peak, and whether the
peak fits `--device_memory_gb` (experiments/memory.py).

Every --what runs over several processes as well (launch/local.sh ... benchmark ...): the
train step then spans all processes' devices, and process 0 writes the figures.

--what=attention measures models/attention.py, the blockwise sparse attention, against dense
causal attention on random q, k, v: batch 1, `--attention_heads` (8) heads of
`--attention_head_dim` (64) channels, at each of `--attention_lengths` (4,096, 16,384, 65,536)
with block l = the power of two nearest sqrt(n) (`--attention_block`), c = 1 summary column:
  * fwd_bwd_s: one jitted forward + backward pass (grad of sum(attend(q, k, v)) w.r.t. q, k
    and v), the median of `--repeats` windows after compilation and a warm-up
    (`--attention_long_repeats` = 3 windows from 65,536 up, about 30 s each on a 2-core CPU),
    for the merged heads 'strided_merged' and 'fixed_merged' (`--attention_patterns`), each of
    which costs what a pair of the model's interleaved layers ('local' then 'strided', or
    'block' then 'summary') cost together, and for 'dense';
  * peak_gib: argument + output + scratch bytes of the compiled executable (its
    memory_analysis); dense is not run (null, and the reason) where its estimated need, 3x
    its [B, H, n, n] float32 scores (scores, probabilities and their gradient; the compiled
    figure at 4,096 agrees), exceeds `--attention_dense_max_gb` (8 GiB): from 16,384
    positions on with 8 heads;
  * time_exponent: per pattern, the least-squares slope of log(time) against log(n) (1.5
    expected for the sparse patterns with l ~ sqrt(n), 2 for dense; null below 2 lengths);
  * the Sparse Transformer's KV-cache sampler (its `generate`, as --what=sampler, random
    parameters) in samples/s summed over 1 and 16 streams (`--attention_sampler_samples` per
    stream) and as a realtime factor, for `--config` if it names that model, else for
    experiments/configs/sparse_transformer.py:runlocal; 'config' holds the config it used.

--what=spectral measures data/spectral.py against librosa (a test dependency, imported only
here) on the same float32 input, uniform noise at 16 kHz: `--spectral_batch` (8) clips of
`--spectral_seconds` (4 s) for the STFT (n_fft 2048, hop 512, Hann), the mel spectrogram (the
same STFT, 128 Slaney mels, power 2) and the CQT (hop 512, 84 bins from C1);
`--spectral_gl_batch` (2) clips for Griffin-Lim (`--spectral_gl_iterations` = 32 rounds,
momentum 0.99, from |STFT| of the clips). JAX is jitted, timed after a warm-up call to
block_until_ready; librosa is timed after a warm-up call too (its caches and numba). Each op
reports the median wall time of `--repeats` calls, seconds of audio per second for both
(batch x seconds / time), and jax_over_librosa, the ratio of those rates (> 1: JAX faster).
`pipeline_mel` is the input pipeline's 'mel' feature for one batch of
experiments/configs/wavenet.py:mel,runlocal (crops of 2,048 samples with their context, as
int16): data/pipeline.py's jitted computation over the batch, against librosa crop by crop (what
a host-side grain transform would run).
XLA uses every core of the machine; librosa's FFTs (numpy / scipy) use one.

--what=flow, --what=gan and --what=distill: the flow vocoders', the GAN generators' and the
distilled students' synthesis speed and their training throughput;
experiments/flow_benchmark.py, gan_benchmark.py and distill_benchmark.py say what
each figure is.
"""

import functools
import importlib.util
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

from ml_collections import config_flags
import numpy as np

from data import corpus
from data import maestro
from data import midi_events
from data import pipeline
from data import specs
from experiments import attention_benchmark
from experiments import distill_benchmark
from experiments import distributed
from experiments import flow_benchmark
from experiments import gan_benchmark
from experiments import memory
from experiments import reference_benchmark
from experiments import sampler_benchmark
from experiments import sharding
from experiments import spectral_benchmark
from experiments import state as state_lib
from experiments import train
import models
from models import attention
from models import wavenet

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The job's flags, defined only when it runs as a program (see experiments/evaluate.py)."""
  flags.DEFINE_enum('what', 'input',
                    ['input', 'train', 'sampler', 'memory', 'attention', 'spectral', 'flow',
                     'gan', 'distill'],
                    'What to measure.')
  config_flags.DEFINE_config_file(
      'config', 'experiments/configs/wavenet.py:peer', 'Experiment config (train, sampler).',
      lock_config=True)
  flags.DEFINE_integer('steps', 5, 'Training steps per timed window.')
  flags.DEFINE_list('sampler_samples', ['16000', '4000'],
                    'Samples per stream generated per timed window, for 1 and 16 streams.')
  flags.DEFINE_integer('naive_samples', 20, 'Steps of the naive sampler.')
  flags.DEFINE_string('json', None, 'Write the figures to this JSON file.')
  flags.DEFINE_string('peer_json', None,
                      'train, sampler: the reference WaveNet\'s benchmark JSON, measured on '
                      'this machine (form: experiments/reference_benchmark.py), set beside '
                      'ours with their ratios.')
  flags.DEFINE_string('dataset', '16k', 'Maestro builder config.')
  flags.DEFINE_integer('batch_size', 16, 'Global batch.')
  flags.DEFINE_integer('crop_samples', 3070 + 8000,
                       'Samples per example: the WaveNet receptive field + 8000 targets.')
  flags.DEFINE_list('worker_count', ['0', '2'], 'grain worker counts to measure.')
  flags.DEFINE_integer('prepare_workers', 2, 'Dataset preparation processes.')
  flags.DEFINE_integer('batches', 20, 'Batches per timed window.')
  flags.DEFINE_integer('repeats', 5, 'Timed windows (the median is reported).')
  flags.DEFINE_integer('corpus_pieces', 32, 'Pieces of the generated corpus.')
  flags.DEFINE_list('attention_lengths', ['4096', '16384', '65536'],
                    'attention: sequence lengths n.')
  flags.DEFINE_integer('attention_heads', 8, 'attention: heads H.')
  flags.DEFINE_integer('attention_head_dim', 64, 'attention: channels per head D.')
  flags.DEFINE_integer('attention_block', 0,
                       'attention: block length l; 0: the power of two nearest '
                       'sqrt(n).')
  flags.DEFINE_integer('attention_summary', 1, 'attention: summary columns c.')
  flags.DEFINE_list('attention_patterns', ['strided_merged', 'fixed_merged'],
                    'attention: sparse patterns timed beside dense.')
  flags.DEFINE_enum('attention_impl', 'auto', list(attention.IMPLEMENTATIONS),
                    'attention: attend(impl=...).')
  flags.DEFINE_enum('attention_dtype', 'float32', ['float32', 'bfloat16'],
                    'attention: dtype of q, k, v.')
  flags.DEFINE_float('attention_dense_max_gb', 8.,
                     'attention: skip dense where its forward + backward, about '
                     '3x its f32 [B, H, n, n] scores, would exceed this (GiB).')
  flags.DEFINE_integer('attention_dense_chunk', 0,
                       'attention: where dense does not fit, time it over '
                       'query chunks of this size instead (the same FLOPs in '
                       'O(chunk n) memory); 0: skip it there.')
  flags.DEFINE_integer('attention_long_repeats', 3,
                       'attention: timed windows from 65,536 positions up.')
  flags.DEFINE_list('attention_sampler_samples', ['2000', '500'],
                    'attention: samples per stream per timed window of '
                    'the Sparse Transformer sampler, for 1 and 16 '
                    'streams.')
  flags.DEFINE_float('spectral_seconds', 4.0, 'spectral: seconds per clip (16 kHz).')
  flags.DEFINE_integer('spectral_batch', 8, 'spectral: clips per call of the STFT, mel and CQT.')
  flags.DEFINE_integer('spectral_gl_batch', 2, 'spectral: clips per call of Griffin-Lim.')
  flags.DEFINE_integer('spectral_gl_iterations', 32, 'spectral: Griffin-Lim iterations.')
  flow_benchmark.define_flags()
  gan_benchmark.define_flags()
  distill_benchmark.define_flags()
  flags.DEFINE_string('mesh', None, "memory: the target mesh as 'data:4,model:2' (default "
                      'config.mesh over the devices present); on CPU, devices are faked.')
  flags.DEFINE_float('device_memory_gb', None,
                     'memory: the target accelerator memory in GiB, to say whether '
                     'the step fits (e.g. 32 for a TPU v4 chip, 80 for an H100).')


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
    prep = measure_preparation(FLAGS.dataset, FLAGS.prepare_workers, root, FLAGS.corpus_pieces)
    logging.info('preparation: %s', prep)
    out.update({k: v for k, v in prep.items() if not k.endswith('_dir')})
    config = specs.input_config()
    config.update(dataset=FLAGS.dataset, manual_dir=prep['manual_dir'],
                  data_dir=prep['data_dir'], batch_size=FLAGS.batch_size,
                  crop_samples=FLAGS.crop_samples)
    by_workers = {}
    for w in map(int, FLAGS.worker_count):
      config.worker_count = w
      by_workers[str(w)] = measure_input(config, FLAGS.batches, FLAGS.repeats)
      logging.info('input, %d workers: %.0f samples/s', w, by_workers[str(w)])
  peak = matmul_peak_gflops()
  flops = wavenet_train_flops_per_sample()
  need = peak * 1e9 / flops
  best = max(by_workers.values())
  out.update({
      'input_batch_size': FLAGS.batch_size, 'input_crop_samples': FLAGS.crop_samples,
      'input_samples_per_s_by_workers': by_workers, 'input_samples_per_s': best,
      'matmul_peak_gflops': peak, 'wavenet_30x64_train_flops_per_sample': flops,
      'wavenet_30x64_samples_per_s_at_matmul_peak': need,
      'input_headroom_over_wavenet_at_peak': best / need,
  })
  return out


def model_train_flops_per_sample(config) -> float | None:
  """Matmul FLOPs per audio sample of one training step: 2 x 3 x the multiply-adds of every
  kernel applied once per sample (the one-hot stem is a gather; conditioning runs per frame),
  for families that keep their parameters as flat `<name>_kernel` entries (WaveNet's
  layout); None for others, whose kernels run at several rates."""
  family, model = models.family(config.model_name), models.create(config)
  params = state_lib.abstract(train.init_fn(config, family, model))['params']
  per_sample = sum(v.size for k, v in params.items() if k.endswith('_kernel') and not (
      k.startswith(('stem_', 'local_')) or k.endswith(('_global_kernel', '_local_kernel'))))
  return 6. * per_sample if per_sample else None


_median_time = attention_benchmark.median_time


def random_batch(input_config, rng: np.random.Generator, batch_size: int | None = None,
                 samples: int | None = None) -> dict:
  """A training batch of `input_config`'s shapes (data/specs.py; its batch and crop unless
  given) with random contents: codes, audio in [-1, 1], events, 0/1 frame features and masks."""
  out = {}
  for k, (shape, dtype) in specs.batch_spec(input_config, batch_size, samples).items():
    if k in ('audio', 'events') and dtype == np.int32:  # codes or events
      high = midi_events.VOCAB_SIZE if k == 'events' else 2 ** input_config.bits
      out[k] = rng.integers(0, high, shape).astype(dtype)
    elif k == 'audio':
      out[k] = rng.uniform(-1, 1, shape).astype(dtype)
    else:
      out[k] = rng.integers(0, 2, shape).astype(dtype)
  return out


def _train_rate(config, family, model) -> dict:
  """One jitted training step of `model` on a random batch of `config`'s shapes, timed: the
  step's median seconds, samples/s and their spread, batch shape, parameters and the frozen
  levels' share where there are any."""
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config)
  init = train.init_fn(config, family, model)
  shardings = state_lib.shardings(init, mesh, rules)
  state = state_lib.create(init, shardings, config.seed)
  batch_sh = sharding.batch_sharding(mesh, rules)
  batch = random_batch(config.input, np.random.default_rng(0))
  unit = 'events' if specs.is_events(config.input) else 'audio'  # what "samples" count
  b, t = batch[unit].shape
  # The same host batch on every process; each process puts its own rows on its devices.
  batch = {k: jax.make_array_from_callback(v.shape, batch_sh, lambda i, v=v: v[i])
           for k, v in batch.items()}
  step = train.make_train_step(config, family, model, train.make_optimizer(config), rules,
                               shardings, batch_sh)
  with jax.set_mesh(mesh):
    holder = [state]

    def run():
      for _ in range(FLAGS.steps):
        holder[0], m = step(holder[0], batch)
      jax.block_until_ready(m)

    run()  # compile + warm-up
    windows = [w / FLAGS.steps for w in attention_benchmark.wall_times(run, FLAGS.repeats)]
    seconds = statistics.median(windows)
    frozen = _frozen_levels_seconds(family, model, holder[0], batch)
    cpu_kernel = (isinstance(model, wavenet.Model) and
                  wavenet.kernel.STACK_FORWARD in step.lower(holder[0], batch).as_text())
  if frozen is not None:
    frozen = {'frozen_levels_s': frozen, 'frozen_levels_fraction_of_step': frozen / seconds}
  return {**(frozen or {}), 'train_batch_size': b, 'train_crop_samples': t, 'train_unit': unit,
          'train_step_s': seconds, 'train_samples_per_s': b * t / seconds,
          'train_samples_per_s_range': attention_benchmark.rate_range(b * t, windows),
          'parameters': int(sum(np.prod(v.shape) for v in jax.tree.leaves(state['params']))),
          **({'train_layers': 'kernel' if cpu_kernel else 'jax'}
             if isinstance(model, wavenet.Model) else {})}


def bench_train() -> dict:
  """--config's training step (_train_rate) and its share of the matmul peak; for a WaveNet
  whose layers run in the CPU kernel (models/wavenet/kernel.py), the pure-JAX layers' step
  timed in the same run too (`train_jax_*`) and the ratio (`train_kernel_over_jax`)."""
  config = FLAGS.config
  family, model = models.family(config.model_name), models.create(config)
  out = _train_rate(config, family, model)
  if out.get('train_layers') == 'kernel':
    jax_out = _train_rate(config, family, model.clone(kernel=False))
    out.update(train_jax_samples_per_s=jax_out['train_samples_per_s'],
               train_jax_samples_per_s_range=jax_out['train_samples_per_s_range'],
               train_kernel_over_jax=out['train_samples_per_s'] / jax_out['train_samples_per_s'])
  flops = model_train_flops_per_sample(config)
  peak = matmul_peak_gflops()
  rate = out['train_samples_per_s']
  gflops = None if flops is None else rate * flops / 1e9
  logging.info('train: %.0f samples/s, %s GFLOP/s of %.1f peak', rate,
               '?' if gflops is None else f'{gflops:.1f}', peak)
  out.update(train_flops_per_sample=flops, train_gflops_per_s=gflops, matmul_peak_gflops=peak,
             train_fraction_of_matmul_peak=None if gflops is None else gflops / peak)
  if 'train_jax_samples_per_s' in out and flops is not None:
    out['train_jax_fraction_of_matmul_peak'] = (out['train_jax_samples_per_s'] * flops / 1e9 /
                                                peak)
  return out


def _frozen_levels_seconds(family, model, state, batch) -> float | None:
  """For a VQ-VAE level or prior over frozen levels: the seconds the step spends coding the
  batch through them (what precomputed codes would save), timed alone; else None."""
  if not getattr(model, 'levels', ()) or not hasattr(family, 'codes_below'):
    return None
  encode = jax.jit(lambda v, audio: family.codes_below(model, v, audio))
  variables = state_lib.variables(state)
  run = lambda: jax.block_until_ready([encode(variables, batch['audio'])
                                       for _ in range(FLAGS.steps)])
  run()
  return _median_time(run, FLAGS.repeats) / FLAGS.steps


def bench_sampler() -> dict:
  """experiments/sampler_benchmark.py's figures of --config."""
  return sampler_benchmark.bench(FLAGS.config, [int(n) for n in FLAGS.sampler_samples],
                                 FLAGS.repeats, FLAGS.naive_samples)


def _target_config():
  """--config with --mesh applied."""
  config = FLAGS.config
  if FLAGS.mesh:
    config = config.copy_and_resolve_references()
    sizes = memory.parse_mesh(FLAGS.mesh)
    unknown = set(sizes) - set(config.mesh)
    if unknown:
      raise app.UsageError(f'--mesh={FLAGS.mesh}: unknown axes {sorted(unknown)}; the config '
                           f'has {", ".join(config.mesh)}')
    for name in config.mesh:  # axes left out have size 1
      config.mesh[name] = sizes.get(name, 1)
  return config


def _fake_devices() -> None:
  """Before the backend starts: as many CPU devices as the target mesh names, so that a plan
  for 8 or 256 accelerators compiles on any machine."""
  if FLAGS.mesh:
    sizes = memory.parse_mesh(FLAGS.mesh).values()
    if -1 not in sizes:
      jax.config.update('jax_num_cpu_devices', int(np.prod(list(sizes))))


def bench_memory() -> dict:
  """The memory plan of --config's train step on --mesh (experiments/memory.py)."""
  config = _target_config()
  sizes = list(config.mesh.values())
  devices = jax.devices() if -1 in sizes else jax.devices('cpu')[:int(np.prod(sizes))]
  out = memory.plan(config, devices, FLAGS.device_memory_gb)
  logging.info('memory plan:\n%s', memory.describe(out))
  return {'memory': out}


def _sparse_transformer_config():
  """(config, where it came from): --config if it names the Sparse Transformer, else the
  runlocal variant of its experiment file (a CPU-sized model); (None, why) without one."""
  if FLAGS.config.model_name == 'sparse_transformer':
    return FLAGS.config, '--config'
  name = 'experiments.configs.sparse_transformer'
  if importlib.util.find_spec(name) is None:
    return None, 'experiments/configs/sparse_transformer.py does not exist'
  return importlib.import_module(name).get_config('runlocal'), (
      'experiments/configs/sparse_transformer.py:runlocal')


def bench_attention() -> dict:
  b, h, d = 1, FLAGS.attention_heads, FLAGS.attention_head_dim
  dtype = jnp.dtype(FLAGS.attention_dtype)
  patterns = list(FLAGS.attention_patterns)
  sparse = [p for p in attention.PATTERNS if p != 'dense']
  if any(p not in sparse for p in patterns):
    raise app.UsageError(f'--attention_patterns={",".join(patterns)}: expected some of '
                         f'{", ".join(sparse)}')
  lengths = [int(n) for n in FLAGS.attention_lengths]
  seconds = {p: [] for p in patterns + ['dense']}
  by_length = {}
  for n in lengths:
    l = FLAGS.attention_block or 2 ** int(round(np.log2(np.sqrt(n))))
    repeats = FLAGS.repeats if n < 65536 else FLAGS.attention_long_repeats
    row = {'block': l, 'repeats': repeats, 'fwd_bwd_s': {}, 'peak_gib': {}}
    for p in patterns + ['dense']:
      row['fwd_bwd_s'][p] = row['peak_gib'][p] = None
      need = 3 * b * h * n * n * 4 / 2**30  # dense: scores, probabilities, their gradient
      chunked = p == 'dense' and need > FLAGS.attention_dense_max_gb
      if chunked and not FLAGS.attention_dense_chunk:
        row['dense_skipped'] = (f'its forward + backward needs about {need:.1f} GiB > '
                                f'--attention_dense_max_gb={FLAGS.attention_dense_max_gb:g}')
      else:
        fn = functools.partial(attention.attend, pattern=p, block=l,
                               summary=FLAGS.attention_summary, impl=FLAGS.attention_impl)
        if chunked:
          fn = functools.partial(attention_benchmark.dense_in_chunks,
                                 chunk=FLAGS.attention_dense_chunk)
          row['dense_in_chunks_of'] = FLAGS.attention_dense_chunk
        compiled, row['peak_gib'][p] = attention_benchmark.compile_attention(
            fn, (b, n, h, d), dtype)
        row['fwd_bwd_s'][p] = attention_benchmark.time_attention(compiled, (b, n, h, d),
                                                                 dtype, repeats)
        logging.info('attention %s, n=%d, l=%d: %.3f s forward + backward, %.3f GiB', p, n,
                     l, row['fwd_bwd_s'][p], row['peak_gib'][p] or float('nan'))
      seconds[p].append(row['fwd_bwd_s'][p])
    if row['fwd_bwd_s']['dense'] is not None:
      row['dense_over_sparse_time'] = {p: row['fwd_bwd_s']['dense'] / row['fwd_bwd_s'][p]
                                       for p in patterns}
    by_length[str(n)] = row
  out = {'attention_batch': b, 'attention_heads': h, 'attention_head_dim': d,
         'attention_summary': FLAGS.attention_summary, 'attention_dtype': dtype.name,
         'attention_impl': FLAGS.attention_impl, 'attention_by_length': by_length,
         'attention_time_exponent': {p: attention_benchmark.time_exponent(lengths, t)
                                     for p, t in seconds.items()}}
  config, source = _sparse_transformer_config()
  out['sampler_config_source'] = source
  out['config'] = None if config is None else json.loads(config.to_json_best_effort())
  if config is None:
    logging.warning('no Sparse Transformer sampler figures: %s', source)
  else:
    out.update(sampler_benchmark.measure(config, *sampler_benchmark.random_model(config),
                               [int(n) for n in FLAGS.attention_sampler_samples], FLAGS.repeats))
  return out


def bench_spectral() -> dict:
  """data/spectral.py against librosa (module docstring; experiments/spectral_benchmark.py)."""
  figures = spectral_benchmark.measure(FLAGS.spectral_seconds, FLAGS.spectral_batch,
                                       FLAGS.spectral_gl_batch, FLAGS.spectral_gl_iterations,
                                       FLAGS.repeats, _median_time)
  if distributed.is_main():
    print(spectral_benchmark.table(figures['spectral']))
  return figures


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  if FLAGS.what == 'memory':
    _fake_devices()
  distributed.initialize()
  figures = {'what': FLAGS.what, 'machine': describe_machine()}
  if FLAGS.what not in ('input', 'spectral', 'flow', 'gan', 'distill'):
    figures['config'] = json.loads(FLAGS.config.to_json_best_effort())
  try:
    reference = (reference_benchmark.load(FLAGS.peer_json, FLAGS.config, FLAGS.what)
                 if FLAGS.peer_json else None)
    figures.update({'input': bench_input, 'train': bench_train, 'sampler': bench_sampler,
                    'memory': bench_memory,
                    'attention': bench_attention, 'spectral': bench_spectral,
                    'flow': lambda: flow_benchmark.bench(_median_time),
                    'gan': lambda: gan_benchmark.bench(_median_time),
                    'distill': lambda: distill_benchmark.bench(_median_time)}[FLAGS.what]())
    if reference is not None:
      figures.update(reference_benchmark.beside(reference, figures))
  except ValueError as e:  # a config that does not fit the mesh, a bad flag value
    raise SystemExit(f'benchmark: {e}') from None
  if distributed.is_main():
    text = json.dumps(figures, indent=1, default=float)
    print(text)
    if FLAGS.json:
      with open(FLAGS.json, 'w') as f:
        f.write(text + '\n')
  distributed.shutdown()


if __name__ == '__main__':
  define_flags()
  app.run(main)
