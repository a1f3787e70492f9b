r"""Factorised sparse attention (Child et al. 2019, "Generating Long Sequences with Sparse
Transformers", arXiv:1904.10509) in pure JAX, blockwise: no [T, T] score matrix is ever built.

q, k, v are [B, T, H, D]; attention is causal (query i sees keys j <= i), scaled by 1/sqrt(D),
and computes scores, softmax and its normaliser in float32 whatever the input dtype (the
unnormalised probabilities, in [0, 1], meet the values in the values' dtype, accumulated in
float32, as flash attention does); the output has q's dtype. With block (stride) length
l = `block` and c = `summary` positions per block, the key set of query i is:

  'dense'           all j <= i.                                     O(T^2)
  'local'           i - l < j <= i (strided pattern, head A).       O(T l)
  'strided'         j <= i and (i - j) % l == 0 (strided, head B).  O(T^2 / l)
  'block'           j <= i and j // l == i // l (fixed, head A).    O(T l)
  'summary'         j <= i and (j % l >= l - c or j == i)           O(T l + c T^2 / l)
                    (fixed pattern, head B).
  'strided_merged'  'local' | 'strided' in one softmax (the paper's merged head).
  'fixed_merged'    'block' | 'summary' in one softmax.

The costs are compute and memory for the forward and backward pass; with l ~ sqrt(T) every
sparse pattern is O(T sqrt T) (x c for the summary columns). 'summary' also admits j == i, so
that every row has a key (the paper's head B alone leaves positions i < l - c with none); this
changes nothing in 'fixed_merged', where 'block' holds i already, and `mask` agrees.

How the model may combine heads (section 4.3 of the paper):
  * interleave: one pattern per layer, alternating 'local' / 'strided' (or 'block' /
    'summary'), so that two consecutive layers connect every pair j <= i;
  * merged: every head attends with 'strided_merged' or 'fixed_merged';
  * split heads: call `attend` on two halves of the heads, one pattern each, and concatenate.

`mask` is the explicit [T, T] reference (O(T^2); for tests), `dense` the reference computation,
`attend` the blockwise one, and `attend_step` one query against a KV cache (the sampler), at
cost O(l + N / l) per step. Blockwise layout: query i = n l + a sits at [n, a] of the
[T / l, l] view of time; 'strided' works on the transposed view [a, n], where each residue a is
a causal dense attention over T / l positions. A merged pattern is a union of disjoint key
sets (duplicates are masked in one of them) normalised by one joint log-sum-exp. On GPU,
`attend(impl='cudnn')` (the default for bf16/fp16 there) runs the patterns that are one plain
causal attention ('dense', 'local', 'block', 'strided') through cuDNN's flash attention.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

PATTERNS = ('dense', 'local', 'strided', 'block', 'summary', 'strided_merged', 'fixed_merged')
IMPLEMENTATIONS = ('auto', 'xla', 'cudnn')
# Patterns that are one plain causal attention over reshaped sequences: cuDNN can run them.
# The others combine partial softmaxes through their log-sum-exp, whose cotangent jax's cuDNN
# backward drops (it returns the residual but differentiates only the output), so they stay
# on the XLA path.
_FUSED = ('dense', 'local', 'block', 'strided')
_NEG = -1e30  # masked scores: finite, so that exp(_NEG - max) is 0 without NaN gradients


def _check(pattern: str, block: int, summary: int, t: int | None = None,
           what: str = 'T') -> None:
  if pattern not in PATTERNS:
    raise ValueError(f'attention pattern {pattern!r}: expected one of {", ".join(PATTERNS)}')
  if block < 1:
    raise ValueError(f'attention block={block}: expected a positive length')
  if not 1 <= summary <= block:
    raise ValueError(f'attention summary={summary}: expected 1 <= summary <= block={block}')
  if t is not None and pattern != 'dense' and t % block:
    raise ValueError(f'attention {pattern!r}: {what}={t} is not a multiple of block={block}')


def mask(pattern: str, n: int, block: int, summary: int = 1) -> np.ndarray:
  """The explicit key set: [n, n] bool, True where query i (row) may see key j (column)."""
  _check(pattern, block, summary)
  i, j = np.arange(n)[:, None], np.arange(n)[None, :]
  l, c = block, summary
  causal = j <= i
  local = causal & (i - j < l)
  strided = causal & ((i - j) % l == 0)
  blocks = causal & (j // l == i // l)
  summ = causal & ((j % l >= l - c) | (j == i))
  return {'dense': causal, 'local': local, 'strided': strided, 'block': blocks,
          'summary': summ, 'strided_merged': local | strided,
          'fixed_merged': blocks | summ}[pattern]


def _scores(eq: str, q: jax.Array, k: jax.Array) -> jax.Array:
  return jnp.einsum(eq, q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5


def dense(q: jax.Array, k: jax.Array, v: jax.Array,
          mask: np.ndarray | None = None) -> jax.Array:  # pylint: disable=redefined-outer-name
  """Causal dense attention, restricted further by an explicit [T, T] mask if given; rows with
  no allowed key give zeros. The reference for `attend` (it builds [B, H, T, T] scores)."""
  t = q.shape[1]
  # From iotas rather than a numpy constant, which jit would embed whole in the program.
  allowed = lax.broadcasted_iota(jnp.int32, (t, t), 1) <= lax.broadcasted_iota(
      jnp.int32, (t, t), 0)
  if mask is not None:
    allowed = allowed & jnp.asarray(mask, bool)
  s = jnp.where(allowed, _scores('bqhd,bkhd->bhqk', q, k), _NEG)  # [B, H, T, T]
  p = jax.nn.softmax(s, axis=-1)
  if mask is not None:  # causal rows always hold i; the zeroing would cost a [B, H, T, T] buffer
    p = p * allowed.any(-1)[:, None]
  out = jnp.einsum('bhqk,bkhd->bqhd', p.astype(v.dtype), v, preferred_element_type=jnp.float32)
  return out.astype(q.dtype)


# ------------------------------------------------------------------------------------------------
# Blockwise parts. Each returns (masked f32 scores whose first axes are [B, X, Y, H], values,
# the einsum from probabilities and values to [B, X, Y, H, D], whether (X, Y) = (A, N)).


def _window_part(qb, kb, vb):
  """Keys of the query's block and the previous one (2l keys), masked to i - l < j <= i."""
  n, l = qb.shape[1], qb.shape[2]
  prev = lambda x: jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0), (0, 0)))[:, :-1]
  k2 = jnp.concatenate([prev(kb), kb], 2)  # [B, N, 2l, H, D]
  v2 = jnp.concatenate([prev(vb), vb], 2)
  blk = np.arange(n)[:, None, None]
  a = np.arange(l)[None, :, None]
  rel = np.arange(2 * l)[None, None, :] - l  # key offset from the start of the query's block
  ok = (rel <= a) & (rel > a - l) & (blk * l + rel >= 0)  # [N, A, 2l]
  s = jnp.where(ok[None, :, :, None, :], _scores('bnahd,bnkhd->bnahk', qb, k2), _NEG)
  return s, v2, 'bnahk,bnkhd->bnahd', False


def _block_part(qb, kb, vb, summary: int | None):
  """Keys of the query's block, j <= i; with `summary`, only its summary columns and i."""
  l = qb.shape[2]
  a, b = np.arange(l)[:, None], np.arange(l)[None, :]
  ok = b <= a  # [A, K]
  if summary is not None:
    ok &= (b >= l - summary) | (b == a)
  s = jnp.where(ok[None, None, :, None, :], _scores('bnahd,bnkhd->bnahk', qb, kb), _NEG)
  return s, vb, 'bnahk,bnkhd->bnahd', False


def _strided_part(qb, kb, vb, strict: bool):
  """Keys at the query's residue mod l: a causal dense attention over the T / l blocks of each
  residue; `strict` drops j == i (held by the local window in 'strided_merged')."""
  n = qb.shape[1]
  m, k = np.arange(n)[:, None], np.arange(n)[None, :]
  ok = k < m if strict else k <= m  # [N, M]
  qr, kr, vr = (x.swapaxes(1, 2) for x in (qb, kb, vb))  # [B, A, N, H, D]
  s = jnp.where(ok[None, None, :, None, :], _scores('banhd,bamhd->banhm', qr, kr), _NEG)
  return s, vr, 'banhm,bamhd->banhd', True


def _summary_part(qb, kb, vb, summary: int):
  """The c summary columns of every earlier block ([T / l x c] keys); the query's own block is
  the block part's."""
  n, l = qb.shape[1], qb.shape[2]
  ks, vs = kb[:, :, l - summary:], vb[:, :, l - summary:]  # [B, M, c, H, D]
  ok = np.arange(n)[:, None] > np.arange(n)[None, :]  # [N, M]
  s = jnp.where(ok[None, :, None, None, :, None], _scores('bnahd,bmchd->bnahmc', qb, ks), _NEG)
  return s, vs, 'bnahmc,bmchd->bnahd', False


def _combine(parts) -> jax.Array:
  """One softmax over the union of the parts' (disjoint) key sets -> [B, N, A, H, D] f32."""
  rows = lambda x, residue: x.swapaxes(1, 2) if residue else x  # [B, A, N, ..] <-> [B, N, A, ..]
  flat = lambda s: s.reshape(s.shape[:4] + (-1,))
  # The max only keeps exp() in range: the result does not depend on it, nor its gradient.
  mx = functools.reduce(jnp.maximum, [rows(flat(s).max(-1), r) for s, _, _, r in parts])
  mx = lax.stop_gradient(mx)  # [B, N, A, H]
  den, out = 0., 0.
  for s, v, eq, r in parts:
    m = rows(mx, r)
    p = jnp.exp(s - m.reshape(m.shape + (1,) * (s.ndim - 4)))
    den = den + rows(flat(p).sum(-1), r)
    out = out + rows(jnp.einsum(eq, p.astype(v.dtype), v, preferred_element_type=jnp.float32),
                     r)
  return out / den[..., None]


def _fused(q, k, v, pattern: str, block: int, implementation: str) -> jax.Array:
  """`_FUSED` patterns as jax.nn.dot_product_attention over reshaped sequences: cuDNN's flash
  attention skips the masked tiles, so 'block' and 'strided' cost what their key sets do."""
  b, t, h, d = q.shape
  l = block
  f = functools.partial(jax.nn.dot_product_attention, is_causal=True,
                        implementation=implementation)
  if pattern == 'dense':
    return f(q, k, v)
  if pattern == 'local':
    return f(q, k, v, local_window_size=(l - 1, 0))
  if pattern == 'block':
    out = f(*(x.reshape(b * t // l, l, h, d) for x in (q, k, v)))  # [B T/l, l, H, D]
    return out.reshape(b, t, h, d)
  to_res = lambda x: x.reshape(b, t // l, l, h, d).swapaxes(1, 2).reshape(b * l, t // l, h, d)
  out = f(to_res(q), to_res(k), to_res(v))  # [B l, T/l, H, D]: one sequence per residue
  return out.reshape(b, l, t // l, h, d).swapaxes(1, 2).reshape(b, t, h, d)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, pattern: str, block: int,
           summary: int = 1, impl: str = 'auto') -> jax.Array:
  """Causal attention restricted to `pattern`'s key set; [B, T, H, D] x 3 -> [B, T, H, D].

  Args:
    q, k, v: [B, T, H, D]; T a multiple of `block` (except for 'dense').
    pattern: one of PATTERNS.
    block: the block / stride length l.
    summary: c, the summary positions at the end of each block (1 <= c <= l).
    impl: 'xla' (blockwise, pure JAX; any backend), 'cudnn' (jax.nn.dot_product_attention's
      cuDNN flash attention for 'dense', 'local', 'block' and 'strided'; the other patterns
      take the XLA path), or 'auto': cudnn on GPU for bf16/fp16 inputs, else xla.

  Returns:
    [B, T, H, D] in q's dtype.
  """
  b, t, h, d = q.shape
  _check(pattern, block, summary, t)
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f'attention impl={impl!r}: expected one of {", ".join(IMPLEMENTATIONS)}')
  if impl == 'auto':
    impl = ('cudnn' if jax.default_backend() == 'gpu' and
            q.dtype in (jnp.bfloat16, jnp.float16) and d % 8 == 0 and d <= 128 else 'xla')
  if impl == 'cudnn' and pattern in _FUSED:
    return _fused(q, k, v, pattern, block, 'cudnn')
  if pattern == 'dense':
    return dense(q, k, v)
  l, c = block, summary
  qb, kb, vb = (x.reshape(b, t // l, l, h, d) for x in (q, k, v))  # [B, N, A, H, D]
  parts = {
      'local': lambda: [_window_part(qb, kb, vb)],
      'strided': lambda: [_strided_part(qb, kb, vb, strict=False)],
      'block': lambda: [_block_part(qb, kb, vb, None)],
      'summary': lambda: [_block_part(qb, kb, vb, c), _summary_part(qb, kb, vb, c)],
      'strided_merged': lambda: [_window_part(qb, kb, vb),
                                 _strided_part(qb, kb, vb, strict=True)],
      'fixed_merged': lambda: [_block_part(qb, kb, vb, None), _summary_part(qb, kb, vb, c)],
  }[pattern]()
  return _combine(parts).reshape(b, t, h, d).astype(q.dtype)


def attend_step(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, t: jax.Array,
                pattern: str, block: int, summary: int = 1) -> jax.Array:
  """Row t of `attend` for one new query per stream: q [B, H, D] at position t (an int32
  scalar, traced or not, shared by the rows) against caches [B, N, H, D] holding positions
  <= t (t included; what lies beyond t is ignored). N is a multiple of `block`. Gathers
  O(block + N / block) keys (all N for 'dense'); returns [B, H, D] in q's dtype."""
  b, n, h, d = k_cache.shape
  _check(pattern, block, summary, n, 'N')
  l, c = block, summary
  t = jnp.asarray(t, jnp.int32)
  ks, vs, oks = [], [], []

  def add(kx, vx, pos, ok):  # [B, K, H, D] x 2, positions [K], allowed [K]
    ks.append(kx)
    vs.append(vx)
    oks.append(ok & (pos <= t))

  def window(start, size):
    pos = start + jnp.arange(size)
    cut = lambda x: lax.dynamic_slice_in_dim(x, start, size, axis=1)
    return cut(k_cache), cut(v_cache), pos

  def grid(x):  # [B, N, H, D] -> [B, N / l, l, H, D]: column a holds positions = a mod l
    return x.reshape(b, n // l, l, h, d)

  if pattern == 'dense':
    add(k_cache, v_cache, jnp.arange(n), True)
  if pattern in ('local', 'strided_merged'):
    # Clipped at 0 (t < l - 1) the slice starts at 0, else at t - l + 1: either way it holds no
    # position <= t - l, and add() masks those > t.
    kx, vx, pos = window(jnp.maximum(t - l + 1, 0), l)
    add(kx, vx, pos, True)
  if pattern in ('block', 'summary', 'fixed_merged'):
    kx, vx, pos = window(t // l * l, l)
    ok = (pos % l >= l - c) | (pos == t) if pattern == 'summary' else True
    add(kx, vx, pos, ok)
  if pattern in ('strided', 'strided_merged'):
    col = lambda x: lax.dynamic_slice_in_dim(grid(x), t % l, 1, axis=2)[:, :, 0]
    pos = jnp.arange(n // l) * l + t % l
    # In the merged head the window holds i itself, the only stride position inside it.
    add(col(k_cache), col(v_cache), pos, pos <= t - l if pattern == 'strided_merged' else True)
  if pattern in ('summary', 'fixed_merged'):
    cols = lambda x: grid(x)[:, :, l - c:].reshape(b, n // l * c, h, d)
    pos = (np.arange(n // l)[:, None] * l + np.arange(l - c, l)).reshape(-1)
    add(cols(k_cache), cols(v_cache), pos, pos // l < t // l)  # the current block is above

  kx, vx = jnp.concatenate(ks, 1), jnp.concatenate(vs, 1)  # [B, K, H, D]
  ok = jnp.concatenate(oks)  # [K]
  s = jnp.where(ok[None, None, :], _scores('bhd,bkhd->bhk', q, kx), _NEG)  # [B, H, K]
  p = jax.nn.softmax(s, axis=-1)
  out = jnp.einsum('bhk,bkhd->bhd', p.astype(vx.dtype), vx, preferred_element_type=jnp.float32)
  return out.astype(q.dtype)
