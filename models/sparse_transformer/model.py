"""The Sparse Transformer network, its windows over long inputs, and its loss.

The architecture and its conventions are described in models/sparse_transformer/__init__.py.
Everything below the module is a pure function of the nested parameter dict, so that the
parallel forward, the prefill and the cached step share one definition of a layer.
"""

from collections.abc import Callable
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import attention as attention_lib
from models.layers import autoregressive
from models.layers import params as params_lib
from models.layers import sampling

# The two factorised patterns of each attention type (paper section 4.2), and the merged head
# over their union.
ATTENTIONS = {'strided': ('local', 'strided'), 'fixed': ('block', 'summary'),
              'dense': ('dense',)}
MERGED = {'strided': 'strided_merged', 'fixed': 'fixed_merged', 'dense': 'dense'}
COMBINES = ('interleave', 'merged', 'heads')
POSITIONS = ('factorized', 'rope')
IMPLS = attention_lib.IMPLEMENTATIONS + ('reference',)  # 'reference': dense under the mask


class Model(autoregressive.Unconditional, nn.Module):
  """Sparse Transformer; `Model(**config.model)`. Logical axes: batch, time, embed, heads, kv
  (per-head channels), mlp, vocab."""
  num_classes: int = 256  # 2^bits of config.input (models.create derives it)
  encoding: str = 'mu_law'  # config.input.encoding (derived)
  max_length: int = 65536  # the context: positions per window
  num_layers: int = 48
  embed_dim: int = 512
  num_heads: int = 16
  mlp_dim: int = 2048
  block: int = 256  # l: the stride / block length, and the row length of the position grid
  summary: int = 8  # c: summary positions per block ('fixed' only)
  attention: str = 'strided'  # a key of ATTENTIONS
  combine: str = 'heads'  # one of COMBINES
  positions: str = 'rope'  # one of POSITIONS
  remat: bool = False  # recompute each layer's activations in the backward pass
  attention_impl: str = 'auto'  # one of IMPLS
  dtype: str = 'float32'  # activations and matmuls; norms, softmax and logits stay float32
  param_dtype: str = 'float32'

  def __post_init__(self):
    if self.attention not in ATTENTIONS:
      raise ValueError(f'model.attention={self.attention!r}: expected one of '
                       f'{", ".join(ATTENTIONS)}')
    if self.combine not in COMBINES:
      raise ValueError(f'model.combine={self.combine!r}: expected one of {", ".join(COMBINES)}')
    if self.attention_impl not in IMPLS:
      raise ValueError(f'model.attention_impl={self.attention_impl!r}: expected one of '
                       f'{", ".join(IMPLS)}')
    if self.block < 1 or self.max_length < 2 or self.max_length % self.block:
      raise ValueError(f'model.max_length={self.max_length}: expected a multiple of '
                       f'model.block={self.block}, at least 2')
    if self.embed_dim % self.num_heads:
      raise ValueError(f'model.embed_dim={self.embed_dim}: expected a multiple of '
                       f'model.num_heads={self.num_heads}')
    if self.positions not in POSITIONS:
      raise ValueError(f'model.positions={self.positions!r}: expected one of '
                       f'{", ".join(POSITIONS)}')
    if self.positions == 'rope' and self.head_dim % 2:
      raise ValueError(f'model.positions=rope rotates pairs of channels: embed_dim / num_heads '
                       f'= {self.head_dim} must be even')
    if self.combine == 'heads' and self.attention != 'dense' and self.num_heads % 2:
      raise ValueError(f'model.num_heads={self.num_heads}: combine=heads splits the heads '
                       'between two patterns; expected an even number')
    if not 1 <= self.summary <= self.block:
      raise ValueError(f'model.summary={self.summary}: expected 1..model.block={self.block}')
    autoregressive.check_encoding(self)
    super().__post_init__()

  @property
  def receptive_field(self) -> int:
    """Samples that the output at one position may depend on (itself included)."""
    return self.max_length

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  @property
  def patterns(self) -> tuple[tuple[str, ...], ...]:
    """Per layer, the attention patterns of its heads (one entry: all heads; two: each half)."""
    pair = ATTENTIONS[self.attention]
    if len(pair) == 1:
      return ((pair[0],),) * self.num_layers
    if self.combine == 'merged':
      return ((MERGED[self.attention],),) * self.num_layers
    if self.combine == 'heads':
      return (pair,) * self.num_layers
    return tuple((pair[i % 2],) for i in range(self.num_layers))

  def _p(self, name, shape, axes, init):
    return params_lib.param(self, name, shape, axes, init)

  def _dense(self, name, d_in, d_out, axes_in, axes_out, scale=1.0):
    return params_lib.dense(self, name, d_in, d_out, axes_in, axes_out, scale)

  def _norm(self, name):
    return {'scale': self._p(f'{name}_scale', (self.embed_dim,), ('embed',),
                             nn.initializers.ones),
            'bias': self._p(f'{name}_bias', (self.embed_dim,), ('embed',), nn.initializers.zeros)}

  @nn.compact
  def _params(self) -> dict:
    """Creates (init) or fetches (apply) every parameter, as the nested dict the sampler uses."""
    e, h, d, m = self.embed_dim, self.num_heads, self.head_dim, self.mlp_dim
    # The paper's residual init: the projections that write into the residual stream are scaled
    # by 1/sqrt(2N), so that its variance stays O(1) through N blocks (a variance scale 1/2N).
    res = 1. / (2 * self.num_layers)
    # The embedded input has unit variance at init (factorised: code 1/2, row and column 1/4).
    factorized = self.positions == 'factorized'
    p = {'embed': self._p('embed', (self.num_classes, e), ('vocab', 'embed'),
                          nn.initializers.normal(0.5 ** 0.5 if factorized else 1.))}
    if factorized:
      p['pos_row'] = self._p('pos_row', (self.max_length // self.block, e), (None, 'embed'),
                             nn.initializers.normal(0.5))
      p['pos_col'] = self._p('pos_col', (self.block, e), (None, 'embed'),
                             nn.initializers.normal(0.5))
    for i in range(self.num_layers):
      p[f'layer{i}'] = {
          'ln1': self._norm(f'l{i}_ln1'),
          'qkv': self._dense(f'l{i}_qkv', e, (3, h, d), 'embed', (None, 'heads', 'kv')),
          'out': self._dense(f'l{i}_out', (h, d), e, ('heads', 'kv'), 'embed', res),
          'ln2': self._norm(f'l{i}_ln2'),
          'mlp_in': self._dense(f'l{i}_mlp_in', e, m, 'embed', 'mlp'),
          'mlp_out': self._dense(f'l{i}_mlp_out', m, e, 'mlp', 'embed', res)}
    p['ln_f'] = self._norm('ln_f')
    p['head'] = self._dense('head', e, self.num_classes, 'embed', 'vocab')
    return p

  def __call__(self, codes: jax.Array) -> jax.Array:
    """codes [B, T] int32 -> logits [B, T, Q] float32; position t predicts codes[:, t + 1].

    Any T: inputs longer than max_length are computed in windows (`windowed`)."""
    p = self._params()
    return logits(self, p, windowed(self, p, codes))


def unboxed_params(model: Model, variables: dict) -> dict:
  """The nested parameter dict of `variables` ({'params': ...} from init or a checkpoint)."""
  return params_lib.nested(model, variables)


# ------------------------------------------------------------------------------------------------
# The layers, as functions of the parameters, over [B, T, ...] (parallel) or [B, ...] (one step).


def constrain(x: jax.Array, *axes: str) -> jax.Array:
  """Logical sharding of x [B, (T,) *axes]: the leading batch (and time) axes are implied."""
  lead = ('batch', 'time')[:x.ndim - len(axes)]
  return nn.with_logical_constraint(x, lead + axes)


def layer_norm(p: dict, x: jax.Array) -> jax.Array:
  """LayerNorm over the last axis, in float32 whatever x's dtype."""
  x = x.astype(jnp.float32)
  mu = x.mean(-1, keepdims=True)
  var = jnp.square(x - mu).mean(-1, keepdims=True)
  return (x - mu) * jax.lax.rsqrt(var + 1e-6) * p['scale'] + p['bias']


def embed(model: Model, p: dict, codes: jax.Array, pos: jax.Array) -> jax.Array:
  """Codes [B, (T)] at window positions `pos` ([T] or scalar) -> x [B, (T), E] in model.dtype.

  Factorised positions: i = r l + c -> pos_row[r] + pos_col[c] (l = block), the paper's 2-D
  layout, whose columns line up with the 'strided' heads' residues mod l. (Rotary positions
  act on queries and keys instead: `rope`.)"""
  x = p['embed'][codes]
  if model.positions == 'factorized':
    x = x + p['pos_row'][pos // model.block] + p['pos_col'][pos % model.block]
  return constrain(x.astype(jnp.dtype(model.dtype)), 'embed')


def rope(x: jax.Array, pos: jax.Array) -> jax.Array:
  """Rotary position embedding (Su et al. 2021) of x [B, (T), H, D] at positions `pos` ([T] or
  scalar): channel pairs (d, d + D/2) rotated by pos x 10000^(-2d/D), so that q . k depends on
  positions only through i - j."""
  half = x.shape[-1] // 2
  freq = 10000. ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [D/2]
  angle = jnp.asarray(pos, jnp.float32)[..., None, None] * freq  # [(T), 1, D/2]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  a, b = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  return jnp.concatenate([a * cos - b * sin, a * sin + b * cos], -1).astype(x.dtype)


def layer(model: Model, lp: dict, x: jax.Array, pos: jax.Array,
          attend: Callable) -> tuple[jax.Array, object]:
  """One block: x + attention(LN(x)), then + MLP(LN(x)). x [B, (T), E] at positions `pos`.

  `attend(q, k, v) -> (o, aux)` runs the attention over time on [B, (T), H, D]; the block
  returns (x, aux) (aux: the parallel pass's k, v; the cached step's updated caches)."""
  dtype = jnp.dtype(model.dtype)
  w = lambda a: a.astype(dtype)
  h = layer_norm(lp['ln1'], x).astype(dtype)
  qkv = jnp.einsum('...e,ekhd->...khd', h, w(lp['qkv']['kernel'])) + w(lp['qkv']['bias'])
  q, k, v = (constrain(qkv[..., i, :, :], 'heads', 'kv') for i in range(3))  # [B, (T), H, D]
  if model.positions == 'rope':
    q, k = rope(q, pos), rope(k, pos)
  o, aux = attend(q, k, v)
  o = constrain(o, 'heads', 'kv')
  x = x + jnp.einsum('...hd,hde->...e', o, w(lp['out']['kernel'])) + w(lp['out']['bias'])
  x = constrain(x, 'embed')
  h = layer_norm(lp['ln2'], x).astype(dtype)
  h = jax.nn.gelu(h @ w(lp['mlp_in']['kernel']) + w(lp['mlp_in']['bias']))
  h = constrain(h, 'mlp')  # [B, (T), M]
  x = x + h @ w(lp['mlp_out']['kernel']) + w(lp['mlp_out']['bias'])
  return constrain(x, 'embed'), aux


def heads_apply(patterns: tuple[str, ...], f: Callable, q: jax.Array, *rest: jax.Array):
  """f(pattern, q, *rest) over the heads (axis -2 of every argument), split evenly between
  the patterns and concatenated back."""
  if len(patterns) == 1:
    return f(patterns[0], q, *rest)
  n = q.shape[-2] // len(patterns)
  cut = lambda a, i: jax.lax.slice_in_dim(a, i * n, (i + 1) * n, axis=a.ndim - 2)
  return jnp.concatenate([f(pat, *(cut(a, i) for a in (q, *rest)))
                          for i, pat in enumerate(patterns)], axis=-2)


def _attend_parallel(model: Model, patterns: tuple[str, ...], q, k, v):
  """[B, T, H, D] x 3 -> ([B, T, H, D], (k, v))."""
  def one(pattern, q, k, v):
    if model.attention_impl == 'reference':
      mask = attention_lib.mask(pattern, q.shape[1], model.block, model.summary)
      return attention_lib.dense(q, k, v, mask)
    return attention_lib.attend(q, k, v, pattern, model.block, model.summary,
                                model.attention_impl)
  return heads_apply(patterns, one, q, k, v), (k, v)


def hidden(model: Model, p: dict, codes: jax.Array) -> tuple[jax.Array, list]:
  """One window from its position 0: codes [B, T], T <= max_length -> (the last layer's
  output [B, T, E] before the final norm, per layer (k, v) [B, T', H, D] with T' = T rounded up
  to a multiple of block)."""
  b, t = codes.shape
  if t > model.max_length:
    raise ValueError(f'{t} positions in one window; model.max_length={model.max_length}')
  tp = -(-t // model.block) * model.block
  codes = jnp.pad(codes, ((0, 0), (0, tp - t)))  # causal: the padding changes nothing before t
  pos = jnp.arange(tp)
  x = embed(model, p, codes, pos)  # [B, T', E]
  kvs = []
  for i, patterns in enumerate(model.patterns):
    f = functools.partial(layer, model, attend=functools.partial(_attend_parallel, model,
                                                                 patterns))
    if model.remat:
      f = jax.checkpoint(f)
    x, kv = f(p[f'layer{i}'], x, pos)
    kvs.append(kv)
  return x[:, :t], kvs


def window_start(model: Model, t):
  """The first position of the window in which position t is computed (int or int array).

  Windows are max_length L long and start every L/2 (rounded down: `half`): position t uses
  the window [0, L) while t < L, then the latest window that holds it with at least L - half
  positions of context before it, so that every output beyond the first window sees the last
  L - half or more samples."""
  ell, half = model.max_length, model.max_length // 2
  if isinstance(t, (int, np.integer)):
    return 0 if t < ell else ((t - ell) // half + 1) * half
  return jnp.where(t < ell, 0, ((t - ell) // half + 1) * half)


def windowed(model: Model, p: dict, codes: jax.Array) -> jax.Array:
  """codes [B, T] -> [B, T, E] (before the final norm), any T.

  T <= max_length: one window. Longer: overlapping windows of L = max_length starting every
  L/2, each from position 0 with no memory of earlier ones (as if preceded by silence);
  position t takes its output from window `window_start(t)`, exactly as the sampler sees it.
  Costs about twice the positions of T."""
  b, t = codes.shape
  ell, half = model.max_length, model.max_length // 2
  if t <= ell:
    return hidden(model, p, codes)[0]
  m = -(-(t - ell) // half)  # windows after the first
  codes = jnp.pad(codes, ((0, 0), (0, ell + m * half - t)))
  idx = np.arange(m + 1)[:, None] * half + np.arange(ell)  # [W, L]
  x = hidden(model, p, codes[:, idx].reshape(b * (m + 1), ell))[0]
  x = x.reshape(b, m + 1, ell, -1)  # [B, W, L, E]
  x = jnp.concatenate([x[:, 0], x[:, 1:, ell - half:].reshape(b, m * half, -1)], axis=1)
  return x[:, :t]


def logits(model: Model, p: dict, x: jax.Array) -> jax.Array:
  """The final norm and output projection, in float32: x [B, (T), E] -> [B, (T), Q]."""
  out = layer_norm(p['ln_f'], x) @ p['head']['kernel'] + p['head']['bias']
  return constrain(out, 'vocab')


# ------------------------------------------------------------------------------------------------
# The loss, and drawing a code from the logits.


def nll(model: Model, out: jax.Array, targets: jax.Array) -> jax.Array:
  """Negative log-likelihood in nats of `targets` [B, T] codes under logits `out` [B, T, Q]."""
  del model
  return sampling.softmax_nll(out, targets)


sample_logits = sampling.sample_logits
