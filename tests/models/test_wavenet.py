"""WaveNet contracts: causality, receptive field, step vs layer, the cached sampler, the output
distributions and config errors (models/wavenet/)."""

import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import wavenet
from models.layers import sampling
from models.wavenet import kernel as step_kernel

# Dilations 1, 2, 4, 8, 16, 1: the sampler's blocks of several streams (wavenet.sampler._BLOCK =
# 16 steps) take the 16 from a whole block at once and the rest step by step; a lone stream's
# blocks (32 steps) take them all step by step. Receptive field 34.
SMALL = dict(num_classes=32, residual_channels=16, gate_channels=32, skip_channels=16,
             num_layers=6, dilation_cycle=5, num_mixtures=4)
HOP = 7  # samples per conditioning frame
# The sampler's step runs in the CPU kernel (models/wavenet/kernel.py) or in XLA ops; the
# contract holds for both. The kernel is built when the package is installed with a compiler.
PATHS = {'jax': False, 'kernel': True}


def _path(name):
  """`kernel=` of the path `name`; skips the kernel's where there is no C++ compiler to build
  it, and fails where there is one and the kernel is not built."""
  if PATHS[name] and not step_kernel.available():
    if not (shutil.which('c++') or shutil.which('g++')):
      pytest.skip('no C++ compiler: the install builds no kernel')
    pytest.fail('the WaveNet step kernel is not built: pip install -e . (with a C++ compiler) '
                'or python -m models.wavenet.kernel_build')
  return PATHS[name]


def _setup(batch=2, length=50, **kw):
  """(model, variables, codes [B, T], local [B, F, D] or None, global_ids [B] or None)."""
  m = wavenet.Model(**{**SMALL, **kw})
  codes = jax.random.randint(jax.random.key(1), (batch, length), 0, m.num_classes)
  local = (jax.random.normal(jax.random.key(2), (batch, -(-length // HOP), m.local_features))
           if m.local_features else None)
  gids = jnp.arange(batch) % m.num_global if m.num_global else None
  v = nn.unbox(m.init(jax.random.key(0), codes[:, :8], None if local is None else local[:, :2],
                      gids))
  return m, v, codes, local, gids


def test_receptive_field_formula():
  m = wavenet.Model(**SMALL)
  assert m.dilations == (1, 2, 4, 8, 16, 1)
  assert m.receptive_field == 34
  assert wavenet.Model().receptive_field == 3071  # the paper's 30 layers, 3 cycles of 1..512


def test_mixture_output_causal_with_receptive_field():
  # The mixture model's input is a real value: differentiate every output through the whole
  # network (stem, layers, head) with respect to every input.
  m, v, codes, _, _ = _setup(batch=1, length=80, output='mixture')
  r, t_len = m.receptive_field, codes.shape[1]
  u = jax.random.normal(jax.random.key(3), (m.out_features,))

  def outputs(values):  # [T] input values -> [T] projected outputs
    with pytest.MonkeyPatch.context() as mp:
      mp.setattr(wavenet.model, 'value', lambda model, c: values[None])
      return m.apply(v, codes)[0] @ u

  jac = np.asarray(jax.jit(jax.jacrev(outputs))(wavenet.value(m, codes[0])))  # [T out, T in]
  t, s = np.meshgrid(np.arange(t_len), np.arange(t_len), indexing='ij')
  assert np.all(jac[s > t] == 0)  # nothing from the future
  assert np.all(jac[s <= t - r] == 0)  # nothing from beyond the receptive field
  assert np.all(np.diagonal(jac) != 0)  # the current input counts
  assert np.all(np.diagonal(jac, offset=-(r - 1)) != 0)  # and the oldest one in the field


def test_softmax_output_causal_with_receptive_field():
  # One-hot inputs: change one code and see which outputs move.
  m, v, codes, _, _ = _setup(batch=1, length=80)
  r, t0 = m.receptive_field, 50
  base = m.apply(v, codes)[0]
  moved = m.apply(v, codes.at[0, t0].set((codes[0, t0] + 1) % m.num_classes))[0]
  changed = np.any(np.asarray(moved != base), axis=-1)
  assert not changed[:t0].any()  # the past does not see it
  assert changed[t0:t0 + r].all()  # every output whose field holds it does
  assert not changed[t0 + r:].any()  # and no later one


CONFIGS = {
    'softmax': {},
    'mixture+conditioning': dict(output='mixture', num_global=3, local_features=5, hop_length=HOP),
    'softmax+conditioning': dict(num_global=3, local_features=5, hop_length=HOP),
    'gaussian+mel': dict(output='gaussian', local_features=5, hop_length=HOP),
    'kernel3': dict(kernel_size=3, num_layers=4, dilation_cycle=3),
    'kernel1': dict(kernel_size=1, num_layers=3),  # no past taps: no queues
}


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('config', CONFIGS.values(), ids=CONFIGS.keys())
def test_step_matches_layer(config, path):
  kernel = _path(path)
  m, v, codes, local, gids = _setup(length=300, **config)
  p = wavenet.unboxed_params(m, v)
  ref = m.apply(v, codes, local, gids)  # [B, T, Q or 3M]
  t_len = codes.shape[1]
  cond = jnp.zeros((codes.shape[0], t_len, m.num_layers, 2, m.gate_channels // 2))
  if gids is not None:
    cond += wavenet.layer_conditioning(m, p, p['global_embed'][gids], 'global')[:, None]
  if local is not None:  # output t uses the frame of its target t + 1, clamped to the last
    frames = wavenet.layer_conditioning(m, p, wavenet.condition(m, p, local), 'local')
    cond += frames[:, np.minimum((np.arange(t_len) + 1) // HOP, local.shape[1] - 1)]
  has_cond = gids is not None or local is not None

  @jax.jit
  def run(codes, cond):
    def body(cache, xs):
      x, c = xs
      return wavenet.step(m, p, cache, x, c if has_cond else None, kernel=kernel)[::-1]
    _, out = jax.lax.scan(body, wavenet.init_cache(m, codes.shape[0]),
                          (codes.T, jnp.moveaxis(cond, 1, 0)))
    return jnp.moveaxis(out, 0, 1)

  np.testing.assert_allclose(run(codes, cond), ref, rtol=1e-5, atol=1e-5)



def _generate(m, v, rng, n, **kw):
  return np.concatenate(list(wavenet.sample_codes(m, v, rng, n, **kw)), axis=1)


@pytest.mark.parametrize('path', PATHS)
def test_sample_codes_at_zero_temperature_is_argmax_of_the_parallel_forward(path):
  m, v, codes, local, gids = _setup(length=64, **CONFIGS['softmax+conditioning'])
  prompt = np.asarray(codes[:, :21])  # teacher-forced over two chunks
  new = _generate(m, v, jax.random.key(5), 40, prompt=prompt, local=local, global_ids=gids,
                  temperature=0., chunk_samples=10, kernel=_path(path))
  assert new.shape == (2, 40) and new.dtype == np.int32
  out = m.apply(v, jnp.concatenate([prompt, new], axis=1), local, gids)
  np.testing.assert_array_equal(new, np.argmax(out[:, 20:-1], axis=-1))


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('config', ['softmax', 'mixture+conditioning', 'gaussian+mel'])
def test_sample_codes_does_not_depend_on_chunks_or_threads(config, path, monkeypatch):
  # Lengths chosen for few distinct compiled shapes: 14 forced and 42 new codes.
  m, v, codes, local, gids = _setup(length=64, **CONFIGS[config])
  kw = dict(prompt=np.asarray(codes[:, :15]), local=local, global_ids=gids, kernel=_path(path))
  a = _generate(m, v, jax.random.key(7), 42, chunk_samples=7, **kw)
  b = _generate(m, v, jax.random.key(7), 42, chunk_samples=50, **kw)
  monkeypatch.setattr(sampling, 'host_parts', lambda b: [(0, b)])  # all streams in one program
  c = _generate(m, v, jax.random.key(7), 42, chunk_samples=50, **kw)
  assert a.shape == (2, 42)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, c)
  assert a.min() >= 0 and a.max() < m.num_classes
  assert not np.array_equal(a, _generate(m, v, jax.random.key(8), 42, chunk_samples=50, **kw))


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('batch,cycle', [(2, 5), (1, 7)])
def test_naive_generate_matches_sample_codes(batch, cycle, path):
  # A prompt as long as the receptive field leaves no zero padding in either sampler's view, so
  # both see the same context and draw the same random numbers: the codes agree exactly. One
  # stream with dilations 1 .. 32 runs the lone stream's blocks, which take dilation 32 at once.
  m = wavenet.Model(**{**SMALL, 'dilation_cycle': cycle})
  m, v, codes, _, _ = _setup(batch=batch, length=m.receptive_field, dilation_cycle=cycle)
  naive = wavenet.naive_generate(m, v, jax.random.key(9), 40, codes)
  cached = _generate(m, v, jax.random.key(9), 40, prompt=np.asarray(codes), chunk_samples=16,
                     kernel=_path(path))
  np.testing.assert_array_equal(naive, cached)


@pytest.mark.parametrize('output', ['mixture', 'gaussian'])
def test_continuous_output_probabilities_sum_to_one_and_sampling_follows_them(output):
  m = wavenet.Model(**{**SMALL, 'num_classes': 16, 'output': output})
  out = 2. * jax.random.normal(jax.random.key(0), (64, m.out_features))
  nll = jax.jit(jax.vmap(lambda c: wavenet.nll(m, out, jnp.full(out.shape[:1], c))))(
      jnp.arange(m.num_classes))  # [Q, N]
  np.testing.assert_allclose(jnp.exp(-nll).sum(0), 1., atol=1e-5)
  # Samples of one output row, at temperature 1, follow those probabilities.
  sample = jax.jit(lambda rng, out, t: wavenet.sample_output(m, rng, out, t))
  x = sample(jax.random.key(1), jnp.broadcast_to(out[0], (40000, m.out_features)), 1.)
  assert x.min() >= 0 and x.max() < m.num_classes
  freq = np.bincount(np.asarray(x), minlength=m.num_classes) / x.size
  np.testing.assert_allclose(freq, jnp.exp(-nll[:, 0]), atol=0.01)
  # Extreme means and scales stay in range.
  wild = 50. * jax.random.normal(jax.random.key(2), (4096, m.out_features))
  for temperature in (0., 1., 10.):
    x = sample(jax.random.key(3), wild, temperature)
    assert x.min() >= 0 and x.max() < m.num_classes


def test_softmax_sampling_follows_the_tempered_probabilities():
  m = wavenet.Model(**{**SMALL, 'num_classes': 16})
  logits = 3. * jax.random.normal(jax.random.key(0), (m.num_classes,)).at[5].set(-1e4)
  sample = jax.jit(lambda rng, out, t: wavenet.sample_output(m, rng, out, t))
  for temperature in (1., 0.5, 2.):
    x = np.asarray(sample(jax.random.key(1), jnp.broadcast_to(logits, (40000, 16)), temperature))
    freq = np.bincount(x, minlength=16) / x.size
    np.testing.assert_allclose(freq, jax.nn.softmax(logits / temperature), atol=0.01)
    assert freq[5] == 0  # a class of zero probability is never drawn
  np.testing.assert_array_equal(sample(jax.random.key(1), logits[None], 0.), [jnp.argmax(logits)])


def test_inverse_cdf_cumulative_sums_are_exact_sums():
  for q in (256, 30, 7):  # grids 16 x 16, 5 x 6, 1 x 7
    p = jax.random.uniform(jax.random.key(q), (3, q))
    np.testing.assert_allclose(sampling.cumsum(p), np.cumsum(p, -1), rtol=1e-6)
  # u at 0 and just below 1 give the first and last classes of nonzero probability.
  logits = jnp.array([[-1e4, 0., 1., -1e4]] * 2)
  np.testing.assert_array_equal(sampling.inverse_cdf(logits, jnp.array([0., 1. - 1e-7]), 1.),
                                [1, 2])


def test_bad_config_and_inputs():
  with pytest.raises(ValueError, match=r'model\.output=.nope.*softmax, mixture, gaussian'):
    wavenet.Model(output='nope')
  with pytest.raises(ValueError, match=r'model\.hop_length'):
    wavenet.Model(local_features=4)
  with pytest.raises(ValueError, match=r'model\.gate_channels'):
    wavenet.Model(gate_channels=33)
  m, v, codes, local, gids = _setup(num_global=3, local_features=5, hop_length=HOP)
  with pytest.raises(ValueError, match='global_ids'):
    next(wavenet.sample_codes(m, v, jax.random.key(0), 4, local=local))
  with pytest.raises(ValueError, match='local'):
    next(wavenet.sample_codes(m, v, jax.random.key(0), 4, global_ids=gids))
  with pytest.raises(ValueError, match='model.local_features=5'):
    next(wavenet.sample_codes(m, v, jax.random.key(0), 4, local=local[..., :4], global_ids=gids))
