"""`python -m experiments.benchmark --what=sampler`: a family's cached sampler.

The family's `generate` of `--config`'s model with random parameters, for 1 and 16 streams, in
samples/s summed over the streams and as a realtime factor at the dataset's rate, each the
median of `--repeats` windows with its spread (`_range`). For WaveNet, `sampler_path` says
whether the step ran in the CPU kernel (models/wavenet/kernel.py) or in XLA ops; with the
kernel, the same figures of the pure-JAX step follow in the same run (`sampler_jax_*`) and the
ratios (`*_kernel_over_jax`). For a family with one, the naive sampler that recomputes the
whole receptive field each step, for one stream.
"""

import statistics

from absl import app
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from data import specs
from experiments import attention_benchmark
import models


def random_model(config) -> tuple:
  """(family, model, variables) of `config` with random parameters."""
  family, model = models.family(config.model_name), models.create(config)
  variables = nn.unbox(family.init(model, jax.random.key(0), specs.zeros_batch(config.input, 1)))
  return family, model, variables


def measure(config, family, model, variables, samples: list[int], repeats: int,
            name: str = 'sampler', **options) -> dict:
  """Samples/s of the family's `generate` (its cached sampler; `options` go to it) for 1 and
  16 streams (`samples` steps each), summed over the streams, and as a realtime factor at the
  dataset's rate; the figures' keys start with `name`."""
  if model.conditions:
    raise app.UsageError('the sampler benchmark measures unconditional models; pick such a '
                         '--config')
  rate = specs.sample_rate(config.input)
  out = {'sample_rate': rate, 'receptive_field': getattr(model, 'receptive_field', None)}
  for streams, n in zip((1, 16), samples):
    def run(streams=streams, n=n):
      for chunk in family.generate(model, variables, jax.random.key(1), n, batch=streams,
                                   chunk_samples=n, **options):
        assert chunk.shape == (streams, n)

    run()  # compile
    windows = attention_benchmark.wall_times(run, repeats)
    sps = streams * n / statistics.median(windows)
    key = f'{name}_{streams}_stream{"s" if streams > 1 else ""}_samples_per_s'
    out[key] = sps
    out[key + '_range'] = attention_benchmark.rate_range(streams * n, windows)
    out[key.replace('samples_per_s', 'realtime_factor')] = sps / streams / rate
    logging.info('%s %s, %d streams: %.0f samples/s', config.model_name, name, streams, sps)
  return out


def bench(config, samples: list[int], repeats: int, naive_samples: int) -> dict:
  """`measure` of `config`; WaveNet's pure-JAX step beside its kernel; the naive sampler (of
  `naive_samples` steps) where the family has one."""
  family, model, variables = random_model(config)
  out = measure(config, family, model, variables, samples, repeats)
  kernel = getattr(family, 'kernel', None)  # WaveNet's CPU kernel of the sampler's step
  if kernel is not None:
    out['sampler_path'] = 'kernel' if kernel.usable(model.dtype) else 'jax'
  if out.get('sampler_path') == 'kernel':  # the pure-JAX step too, in the same run
    out.update(measure(config, family, model, variables, samples, repeats, name='sampler_jax',
                       kernel=False))
    for key in [k for k in out if k.startswith('sampler_jax_') and k.endswith('_per_s')]:
      mine = key.replace('sampler_jax_', 'sampler_')
      out[mine.replace('samples_per_s', 'kernel_over_jax')] = out[mine] / out[key]
  if not hasattr(family, 'naive_generate'):
    return out
  window = jnp.zeros((1, model.receptive_field), jnp.int32)
  naive = lambda: family.naive_generate(model, variables, jax.random.key(1), naive_samples,
                                        window).block_until_ready()
  naive()
  sps = naive_samples / attention_benchmark.median_time(naive, repeats)
  out.update(naive_sampler_1_stream_samples_per_s=sps,
             naive_sampler_1_stream_realtime_factor=sps / out['sample_rate'],
             cached_over_naive_1_stream=out['sampler_1_stream_samples_per_s'] / sps)
  logging.info('naive sampler, 1 stream: %.1f samples/s', sps)
  return out
