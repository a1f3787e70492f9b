"""Sparse attention: key sets, values and gradients against the dense reference, causality, the
cached step, bf16, bad input, and that no [T, T] intermediate is built."""

import re

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from models import attention

B, T, H, D, L = 2, 64, 2, 8, 8
SPARSE = [p for p in attention.PATTERNS if p != 'dense']
# (pattern, summary): c only matters to the patterns with summary columns.
CASES = ([(p, 1) for p in attention.PATTERNS] +
         [(p, 2) for p in ('summary', 'fixed_merged')] + [('fixed_merged', L)])


def _qkv(dtype=jnp.float32, t=T, h=H, seed=0):
  r = np.random.default_rng(seed)
  return tuple(jnp.asarray(r.normal(size=(B, t, h, D)), dtype) for _ in range(3))


def _brute_mask(pattern, n, l, c):
  """The key sets as the paper states them, one (i, j) at a time."""
  out = np.zeros((n, n), bool)
  for i in range(n):
    for j in range(i + 1):
      local = i - j < l
      strided = (i - j) % l == 0
      same_block = j // l == i // l
      summary = j % l >= l - c or j == i
      out[i, j] = {'dense': True, 'local': local, 'strided': strided, 'block': same_block,
                   'summary': summary, 'strided_merged': local or strided,
                   'fixed_merged': same_block or summary}[pattern]
  return out


@pytest.mark.parametrize('n,l,c', [(24, 4, 1), (30, 4, 3), (16, 16, 2)])
@pytest.mark.parametrize('pattern', attention.PATTERNS)
def test_mask_matches_brute_force(pattern, n, l, c):
  np.testing.assert_array_equal(attention.mask(pattern, n, l, c), _brute_mask(pattern, n, l, c))


def test_every_row_has_a_key():
  for p in attention.PATTERNS:
    assert attention.mask(p, T, L, 2).any(1).all(), p


@pytest.mark.parametrize('pattern,c', CASES)
def test_attend_equals_masked_dense(pattern, c):
  """Values, and gradients w.r.t. q, k, v of a random linear functional of the output."""
  q, k, v = _qkv()
  w = jnp.asarray(np.random.default_rng(1).normal(size=(B, T, H, D)), jnp.float32)
  m = attention.mask(pattern, T, L, c)

  def out_and_grads(f):
    def run(q, k, v):
      out, vjp = jax.vjp(f, q, k, v)
      return out, vjp(w)
    return jax.jit(run)(q, k, v)

  out, grads = out_and_grads(lambda q, k, v: attention.attend(q, k, v, pattern, L, c, impl='xla'))
  ref, ref_grads = out_and_grads(lambda q, k, v: attention.dense(q, k, v, m))
  np.testing.assert_allclose(out, ref, atol=1e-5)
  for name, g, r in zip('qkv', grads, ref_grads):
    np.testing.assert_allclose(g, r, atol=1e-5, err_msg=f'd/d{name}')


@pytest.mark.parametrize('pattern,c', CASES)
def test_gradients_flow_exactly_through_the_key_set(pattern, c):
  """d out_i / d k_j and d v_j are exactly zero for j > i (causality), and d v_j is nonzero
  exactly where the mask allows (i, j): the blockwise parts cover the key set, no more."""
  q, k, v = _qkv(t=32)
  w = jnp.asarray(np.random.default_rng(2).normal(size=(B, H, D)), jnp.float32)

  def row(i):
    f = lambda k, v: jnp.sum(attention.attend(q, k, v, pattern, L, c, impl='xla')[:, i] * w)
    return jax.grad(f, argnums=(0, 1))(k, v)

  dk, dv = jax.jit(jax.vmap(row))(jnp.arange(32))  # [i, B, j, H, D]
  later = np.triu(np.ones((32, 32), bool), 1)  # [i, j]: j > i
  for g in (dk, dv):
    assert not np.asarray(g).transpose(0, 2, 1, 3, 4)[later].any()
  support = np.abs(np.asarray(dv)).max(axis=(1, 3, 4)) > 0  # [i, j]
  np.testing.assert_array_equal(support, attention.mask(pattern, 32, L, c))


@pytest.mark.parametrize('pattern,c', CASES)
def test_step_equals_row_of_attend(pattern, c):
  """Every t, in a jitted lax.scan (t traced, as in the sampler), with garbage after t."""
  q, k, v = _qkv()
  full = attention.attend(q, k, v, pattern, L, c, impl='xla')
  garbage = jnp.asarray(np.random.default_rng(3).normal(size=(2, B, T, H, D)) * 1e3,
                        jnp.float32)

  @jax.jit
  def steps(q, k, v):
    def body(_, t):
      after = (jnp.arange(T) > t)[None, :, None, None]
      kc, vc = jnp.where(after, garbage[0], k), jnp.where(after, garbage[1], v)
      qt = lax.dynamic_index_in_dim(q, t, axis=1, keepdims=False)
      return None, attention.attend_step(qt, kc, vc, t, pattern, L, c)
    return lax.scan(body, None, jnp.arange(T, dtype=jnp.int32))[1]  # [T, B, H, D]

  np.testing.assert_allclose(steps(q, k, v).swapaxes(0, 1), full, atol=1e-5)


@pytest.mark.parametrize('pattern', attention.PATTERNS)
def test_bfloat16(pattern):
  q, k, v = _qkv(jnp.bfloat16)

  @jax.jit
  def run(q, k, v):
    f = lambda q, k, v: attention.attend(q, k, v, pattern, L, 2, impl='xla')
    ref = f(*(x.astype(jnp.float32) for x in (q, k, v)))
    g = jax.grad(lambda q: f(q, k, v).astype(jnp.float32).sum())(q)
    return f(q, k, v), ref, g, attention.attend_step(q[:, 40], k, v, 40, pattern, L, 2)

  out, ref, g, step = run(q, k, v)
  assert out.dtype == g.dtype == step.dtype == jnp.bfloat16
  # bf16 keeps 8 bits of mantissa: outputs of size ~1 agree to a few hundredths.
  np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=3e-2)
  np.testing.assert_allclose(step.astype(jnp.float32), ref[:, 40], atol=3e-2)
  assert np.isfinite(np.asarray(g, np.float32)).all()


@pytest.mark.parametrize('pattern', ['dense', 'local', 'block', 'strided'])
def test_fused_layout_equals_attend(pattern):
  """The reshapes that feed cuDNN, run through jax.nn.dot_product_attention's XLA backend
  (no GPU here): they must select the same key sets as the blockwise path."""
  q, k, v = _qkv()
  fused = attention._fused(q, k, v, pattern, L, 'xla')  # pylint: disable=protected-access
  np.testing.assert_allclose(fused, attention.attend(q, k, v, pattern, L, impl='xla'),
                             atol=1e-5)


def test_auto_and_cudnn_fallback_on_cpu():
  q, k, v = _qkv()
  ref = attention.attend(q, k, v, 'fixed_merged', L, impl='xla')
  np.testing.assert_array_equal(attention.attend(q, k, v, 'fixed_merged', L), ref)
  # Merged patterns take the XLA path whatever impl says.
  np.testing.assert_array_equal(attention.attend(q, k, v, 'fixed_merged', L, impl='cudnn'), ref)


def test_bad_input():
  q, k, v = _qkv(t=60)
  with pytest.raises(ValueError, match=r'T=60 is not a multiple of block=8'):
    attention.attend(q, k, v, 'local', 8)
  with pytest.raises(ValueError, match=r'N=60 is not a multiple of block=8'):
    attention.attend_step(q[:, 0], k, v, 0, 'strided', 8)
  with pytest.raises(ValueError, match='expected one of ' + ', '.join(attention.PATTERNS)):
    attention.attend(q, k, v, 'axial', 6)
  with pytest.raises(ValueError, match=r'summary=7: expected 1 <= summary <= block=6'):
    attention.attend(q, k, v, 'summary', 6, 7)
  with pytest.raises(ValueError, match=r"impl='triton'"):
    attention.attend(q, k, v, 'local', 6, impl='triton')
  assert attention.attend(q, k, v, 'dense', 8).shape == q.shape  # dense ignores the block


def test_no_quadratic_intermediate():
  """At T=4096, l=64 the compiled forward+backward holds no [T, T] array: no HLO shape with two
  T-sized dimensions, and scratch memory far below one f32 [T, T] matrix (dense, the control,
  is above it)."""
  t, l = 4096, 64
  x = jax.ShapeDtypeStruct((1, t, 1, D), jnp.float32)

  def compiled(pattern):
    f = lambda q, k, v: attention.attend(q, k, v, pattern, l, 2, impl='xla').sum()
    lowered = jax.jit(jax.grad(f, argnums=(0, 1, 2))).lower(x, x, x)
    return lowered.as_text(), lowered.compile().memory_analysis().temp_size_in_bytes

  def square(text):  # any tensor<...> type with two dimensions of size T
    shapes = re.findall(r'tensor<((?:\d+x)+)', text)
    return any(s.split('x').count(str(t)) >= 2 for s in shapes)

  text, temp = compiled('dense')
  assert square(text) and temp > t * t * 4
  for p in ('strided_merged', 'fixed_merged', 'summary'):
    text, temp = compiled(p)
    assert not square(text), p
    assert temp < t * t * 4 / 4, (p, temp)
