r"""Causal self-attention with learned relative-position logits (Shaw et al. 2018), computed
with the Music Transformer's memory-efficient skewing (Huang et al. 2019, section 3.4.1).

q, k, v are [B, T, H, D]; `emb` [H, M, D] holds one vector per head for each relative distance
0 .. M - 1 (query i, key j <= i: distance i - j; distances >= M share the last vector, as
Shaw et al. clip them). The logit of key j for query i is

    (q_i . k_j + q_i . emb[min(i - j, M - 1)]) / sqrt(D).

`relative_logits_explicit` builds the [T, T, D] tensor of relative embeddings, O(T^2 D) memory,
as Shaw et al. do. `relative_logits` instead multiplies q by the T distance vectors once,
Q E^T [T, T] with column c for distance T - 1 - c, and skews it: pad one column on the left,
view the [T, T + 1] result as [T + 1, T], drop the first row; row i then holds distance i - j
at column j for every j <= i (the rest is masked). Memory O(T D) beyond the [T, T] logits that
attention needs anyway. `attend_step` is one query against a KV cache (the sampler).
"""

import jax
import jax.numpy as jnp


def distance_table(emb: jax.Array, t: int) -> jax.Array:
  """[H, M, D] vectors by distance -> [H, T, D] with row c for distance T - 1 - c (clipped)."""
  dist = jnp.minimum(t - 1 - jnp.arange(t), emb.shape[1] - 1)
  return emb[:, dist]


def skew(x: jax.Array) -> jax.Array:
  """[..., T, T] with column c for distance T - 1 - c -> [..., T, T] with column j for
  distance i - j in row i (for j <= i; the upper triangle holds other entries)."""
  *lead, t, _ = x.shape
  x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])  # [..., T, T + 1]
  return x.reshape(*lead, t + 1, t)[..., 1:, :]


def relative_logits(q: jax.Array, emb: jax.Array) -> jax.Array:
  """q [B, T, H, D], emb [H, M, D] -> [B, H, T, T]: q_i . emb[min(i - j, M - 1)] at [i, j]
  for j <= i, by skewing."""
  table = distance_table(emb, q.shape[1]).astype(q.dtype)
  return skew(jnp.einsum('bthd,hcd->bhtc', q, table, preferred_element_type=jnp.float32))


def relative_logits_explicit(q: jax.Array, emb: jax.Array) -> jax.Array:
  """The O(T^2 D) reference of `relative_logits`, zero above the diagonal."""
  t = q.shape[1]
  i, j = jnp.arange(t)[:, None], jnp.arange(t)[None, :]
  dist = jnp.clip(i - j, 0, emb.shape[1] - 1)  # [T, T]
  out = jnp.einsum('bihd,hijd->bhij', q.astype(jnp.float32),
                   emb[:, dist].astype(jnp.float32))  # emb[:, dist]: [H, T, T, D]
  return jnp.where(j <= i, out, 0.)


def _softmax_values(logits: jax.Array, mask: jax.Array, v: jax.Array) -> jax.Array:
  """Masked softmax over the last axis of float32 logits [B, H, Tq, S], applied to v
  [B, S, H, D] -> [B, Tq, H, D] in v's dtype."""
  logits = jnp.where(mask, logits, -jnp.inf)
  p = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum('bhqs,bshd->bqhd', p.astype(v.dtype), v,
                    preferred_element_type=jnp.float32).astype(v.dtype)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, emb: jax.Array,
           explicit: bool = False) -> jax.Array:
  """Causal attention with relative logits: [B, T, H, D] each, emb [H, M, D] -> [B, T, H, D]
  (the relative logits by skewing, or by the explicit reference)."""
  t, d = q.shape[1], q.shape[-1]
  rel = (relative_logits_explicit if explicit else relative_logits)(q, emb)
  logits = (jnp.einsum('bihd,bjhd->bhij', q, k, preferred_element_type=jnp.float32) + rel)
  causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
  return _softmax_values(logits * d ** -0.5, causal, v)


def attend_step(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, t: jax.Array,
                emb: jax.Array) -> jax.Array:
  """The query at position t, q [B, H, D], against a cache [B, S, H, D] whose slot j holds
  position j (slots > t are ignored) -> [B, H, D]: row t of `attend`."""
  s, d = k_cache.shape[1], q.shape[-1]
  j = jnp.arange(s)
  by_distance = jnp.einsum('bhd,hmd->bhm', q, emb, preferred_element_type=jnp.float32)
  rel = by_distance[..., jnp.clip(t - j, 0, emb.shape[1] - 1)]  # [B, H, S]
  logits = jnp.einsum('bhd,bshd->bhs', q, k_cache, preferred_element_type=jnp.float32) + rel
  out = _softmax_values((logits * d ** -0.5)[:, :, None], (j <= t)[None, None, None], v_cache)
  return out[:, 0]
