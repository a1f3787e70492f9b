"""Relative attention (models/relative_attention.py): the skewed relative logits equal the
explicit O(T^2 D) computation, values and gradients; attention without relative vectors is
plain causal attention; one cached step is its row of the parallel pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import attention
from models import relative_attention as ra


def _qkv(t=37, h=2, d=8, m=37, seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  q, k, v = (jax.random.normal(x, (2, t, h, d)) for x in ks[:3])
  return q, k, v, jax.random.normal(ks[3], (h, m, d))


@pytest.mark.parametrize('m', [37, 10, 64])  # as many distances as positions, fewer, more
def test_skewed_relative_logits_equal_the_explicit_ones(m):
  q, _, _, emb = _qkv(m=m)
  skewed, explicit = ra.relative_logits(q, emb), ra.relative_logits_explicit(q, emb)
  lower = np.tril(np.ones((37, 37), bool))
  np.testing.assert_allclose(np.where(lower, skewed, 0.), explicit, rtol=1e-5, atol=1e-5)
  # By hand: query 20, key 3 of head 1 sees distance 17, clipped to m - 1.
  np.testing.assert_allclose(explicit[1, 1, 20, 3], q[1, 20, 1] @ emb[1, min(17, m - 1)],
                             rtol=1e-5)


def test_attention_by_skewing_equals_the_explicit_reference_in_value_and_gradient():
  q, k, v, emb = _qkv(m=12)
  loss = lambda explicit: lambda q, k, v, emb: jnp.sum(
      jnp.sin(ra.attend(q, k, v, emb, explicit=explicit)))
  np.testing.assert_allclose(ra.attend(q, k, v, emb), ra.attend(q, k, v, emb, explicit=True),
                             rtol=1e-5, atol=1e-5)
  g_skew = jax.grad(loss(False), argnums=(0, 1, 2, 3))(q, k, v, emb)
  g_ref = jax.grad(loss(True), argnums=(0, 1, 2, 3))(q, k, v, emb)
  for a, b in zip(g_skew, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(g_skew[3]).sum()) > 0  # the relative vectors are trained


def test_zero_relative_vectors_give_plain_causal_attention():
  q, k, v, emb = _qkv()
  np.testing.assert_allclose(ra.attend(q, k, v, jnp.zeros_like(emb)), attention.dense(q, k, v),
                             rtol=1e-5, atol=1e-5)
  # Causal: the output at 10 does not depend on keys or values after 10.
  v2 = v.at[:, 11:].set(7.)
  np.testing.assert_allclose(ra.attend(q, k, v2, emb)[:, :11], ra.attend(q, k, v, emb)[:, :11],
                             rtol=1e-6)


def test_a_cached_step_is_its_row_of_the_parallel_pass():
  q, k, v, emb = _qkv(m=9)
  full = ra.attend(q, k, v, emb)
  step = jax.jit(ra.attend_step)
  cache_k = jnp.zeros((2, 48, 2, 8)).at[:, :37].set(k)  # slots past 36 hold nothing yet
  cache_v = jnp.zeros((2, 48, 2, 8)).at[:, :37].set(v)
  for t in (0, 1, 8, 9, 36):
    np.testing.assert_allclose(step(q[:, t], cache_k, cache_v, jnp.int32(t), emb), full[:, t],
                               rtol=1e-5, atol=1e-5)
