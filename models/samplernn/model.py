"""The SampleRNN network: frame tiers of recurrent networks over a sample-level MLP.

The architecture and its conventions are described in models/samplernn/__init__.py. Every
layer is a function of the nested parameter dict, over whole subsequences (training) or one
step (the sampler, models/samplernn/sampler.py), so that both share one definition.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import autoregressive
from models.layers import params as params_lib

RNNS = {'gru': 3, 'lstm': 4}  # gate blocks per cell


class Model(autoregressive.Unconditional, nn.Module):
  """SampleRNN; `Model(**config.model)`. Logical axes: batch, time, embed (a tier's width),
  mlp (recurrent gates), vocab (codes)."""
  num_classes: int = 256  # 2^bits of config.input (models.create derives it)
  encoding: str = 'linear'  # config.input.encoding (derived)
  frame_sizes: tuple[int, ...] = (8, 2)  # samples per step of each frame tier, top first
  dim: int = 1024  # every tier's recurrent state and the MLP's width
  rnn: str = 'gru'  # 'gru' or 'lstm'
  rnn_layers: int = 1  # recurrent layers per frame tier
  embed_dim: int = 256  # the sample-level MLP's embedding of each input code
  mlp_layers: int = 3  # hidden ReLU layers of the sample-level MLP (the paper's 3)
  tbptt_samples: int = 512  # predicted samples per truncated-BPTT subsequence
  param_dtype: str = 'float32'

  def __post_init__(self):
    f = tuple(self.frame_sizes)
    if not f or any(a < 1 for a in f) or any(a % b for a, b in zip(f, f[1:])):
      raise ValueError(f'model.frame_sizes={f}: expected frame sizes top first, each a '
                       'multiple of the next (e.g. (8, 2))')
    if self.rnn not in RNNS:
      raise ValueError(f'model.rnn={self.rnn!r}: expected one of {", ".join(RNNS)}')
    if self.tbptt_samples < 1 or self.tbptt_samples % f[0]:
      raise ValueError(f'model.tbptt_samples={self.tbptt_samples}: expected a multiple of the '
                       f'top frame size {f[0]}')
    autoregressive.check_encoding(self)
    super().__post_init__()

  @property
  def context(self) -> int:
    """Samples before the first predicted one: the top tier's first input frame."""
    return self.frame_sizes[0]

  @property
  def ratios(self) -> tuple[int, ...]:
    """Per frame tier, the steps of the tier below (or samples) per step of it."""
    f = tuple(self.frame_sizes)
    return tuple(a // b for a, b in zip(f, f[1:] + (1,)))

  @property
  def receptive_field(self) -> None:
    return None  # unbounded: the recurrent state carries the whole past

  def _p(self, name, shape, axes, init):
    return params_lib.param(self, name, shape, axes, init)

  def _dense(self, name, d_in, d_out, axes_in, axes_out, scale=1.0):
    return params_lib.dense(self, name, d_in, d_out, axes_in, axes_out, scale)

  @nn.compact
  def _params(self) -> dict:
    """Creates (init) or fetches (apply) every parameter, as the nested dict the sampler uses."""
    d, g = self.dim, RNNS[self.rnn]
    p = {}
    for k, (frame, ratio) in enumerate(zip(self.frame_sizes, self.ratios)):
      tier = {'in': self._dense(f't{k}_in', frame, d, None, 'embed'),
              'up': self._dense(f't{k}_up', d, (ratio, d), 'embed', (None, None))}
      for l in range(self.rnn_layers):
        tier[f'rnn{l}'] = {
            'x': self._dense(f't{k}_rnn{l}_x', d, (g, d), 'embed', (None, 'mlp')),
            'h': self._p(f't{k}_rnn{l}_h', (d, g, d), ('embed', None, 'mlp'),
                         nn.initializers.orthogonal(column_axis=-1)),
            'h_bias': self._p(f't{k}_rnn{l}_h_bias', (g, d), (None, 'mlp'),
                              nn.initializers.zeros),
            # the learned initial state (the LSTM's: cell and output)
            'h0': self._p(f't{k}_rnn{l}_h0', (2 if self.rnn == 'lstm' else 1, d),
                          (None, 'embed'), nn.initializers.zeros)}
      p[f'tier{k}'] = tier
    e = self.embed_dim
    mlp = {'embed': self._p('mlp_embed', (self.num_classes, e), ('vocab', None),
                            nn.initializers.normal(1.)),
           'in': self._dense('mlp_in', (self.frame_sizes[-1], e), d, (None, None), 'embed')}
    for l in range(1, self.mlp_layers):
      mlp[f'hidden{l}'] = self._dense(f'mlp_hidden{l}', d, d, None, 'embed')
    mlp['out'] = self._dense('mlp_out', d, self.num_classes, 'embed', 'vocab')
    p['mlp'] = mlp
    return p

  def __call__(self, codes: jax.Array) -> jax.Array:
    """codes [B, C + N] (C = `context`) -> logits [B, N, Q] of codes[:, C:], from the learned
    initial states in one pass (N a multiple of the top frame size; for init and tests; the
    loss runs `subsequence` over truncated-BPTT windows)."""
    p = self._params()
    return subsequence(self, p, initial_state(self, p, codes.shape[0]), codes)[0]


def unboxed_params(model: Model, variables: dict) -> dict:
  """The nested parameter dict of `variables` ({'params': ...} from init or a checkpoint)."""
  return params_lib.nested(model, variables)


# ------------------------------------------------------------------------------------------------
# The layers, as functions of the parameters.


def initial_state(model: Model, p: dict, batch: int) -> list:
  """Per frame tier, per layer, the learned initial state [B, S, D] (S = 2 for an LSTM)."""
  return [[jnp.broadcast_to(p[f'tier{k}'][f'rnn{l}']['h0'],
                            (batch,) + p[f'tier{k}'][f'rnn{l}']['h0'].shape)
           for l in range(model.rnn_layers)] for k in range(len(model.frame_sizes))]


def frame_input(model: Model, codes: jax.Array) -> jax.Array:
  """Codes [B, T] (or one-hot [B, T, Q]) -> the frame tiers' real-valued input [B, T], the
  codes scaled linearly to [-2, 2]."""
  if codes.ndim == 3:  # one-hot: differentiable, for the causality test
    codes = codes @ jnp.arange(model.num_classes, dtype=jnp.float32)
  half = model.num_classes / 2
  return (codes.astype(jnp.float32) / half - 1.) * 2.


def embed(p: dict, window: jax.Array) -> jax.Array:
  """Codes [..., F] (or one-hot [..., F, Q]) -> the MLP's embeddings [..., F, E]."""
  table = p['mlp']['embed']
  return window @ table if jnp.issubdtype(window.dtype, jnp.floating) else table[window]


def cell(model: Model, q: dict, state: jax.Array, xg: jax.Array) -> tuple:
  """One recurrent step: state [B, S, D], input projection xg [B, G, D] -> (state, output)."""
  hg = jnp.einsum('bd,dgh->bgh', state[:, -1], q['h']) + q['h_bias']
  if model.rnn == 'gru':
    r = jax.nn.sigmoid(xg[:, 0] + hg[:, 0])
    z = jax.nn.sigmoid(xg[:, 1] + hg[:, 1])
    n = jnp.tanh(xg[:, 2] + r * hg[:, 2])
    h = (1. - z) * n + z * state[:, -1]
    return h[:, None], h
  i, f, g, o = (xg[:, j] + hg[:, j] for j in range(4))
  c = jax.nn.sigmoid(f + 1.) * state[:, 0] + jax.nn.sigmoid(i) * jnp.tanh(g)  # forget bias 1
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return jnp.stack([c, h], axis=1), h


def rnn(model: Model, tier: dict, states: list, x: jax.Array) -> tuple[list, jax.Array]:
  """A tier's recurrent layers over x [B, S, D] (S steps) from `states`: (new states, [B, S, D])."""
  new = []
  for l, state in enumerate(states):
    q = tier[f'rnn{l}']
    xg = jnp.einsum('bsd,dgh->sbgh', x, q['x']['kernel']) + q['x']['bias']  # all steps at once

    def body(s, xg_t, q=q):
      return cell(model, q, s, xg_t)
    state, ys = jax.lax.scan(body, state, xg)
    new.append(state)
    x = jnp.swapaxes(ys, 0, 1)
  return new, x


def upsample(tier: dict, h: jax.Array) -> jax.Array:
  """[B, S, D] -> [B, S r, D]: r learned projections of each step (one per lower step)."""
  u = jnp.einsum('bsd,dre->bsre', h, tier['up']['kernel']) + tier['up']['bias']
  return u.reshape(h.shape[0], -1, h.shape[-1])


def mlp_logits(model: Model, p: dict, window: jax.Array, cond: jax.Array) -> jax.Array:
  """The sample-level MLP: the last F codes [..., F] (or one-hot [..., F, Q]) and its tier's
  conditioning [..., D] -> logits [..., Q]."""
  m = p['mlp']
  e = embed(p, window)  # [..., F, E]
  h = jnp.einsum('...fe,fed->...d', e, m['in']['kernel']) + m['in']['bias'] + cond
  h = jax.nn.relu(h)
  for l in range(1, model.mlp_layers):
    h = jax.nn.relu(h @ m[f'hidden{l}']['kernel'] + m[f'hidden{l}']['bias'])
  return (h @ m['out']['kernel'] + m['out']['bias']).astype(jnp.float32)


def subsequence(model: Model, p: dict, states: list, codes: jax.Array) -> tuple:
  """(logits [B, N, Q] of codes[:, C:], the states after them) of codes [B, C + N] (or
  one-hot [B, C + N, Q]) from `states` (C = model.context; N a multiple of the top frame
  size).

  Frame tier k (frame F) steps once per F samples: its step predicting samples [C + sF,
  C + (s + 1) F) reads the F codes before them, projected, plus the conditioning of the tier
  above for that step; its upsampled output conditions the tier below (or the MLP) for each of
  its steps. The MLP predicts sample t from codes [t - F_last, t) and its conditioning."""
  c, n = model.context, codes.shape[1] - model.context
  x = frame_input(model, codes)
  cond, new = None, []
  for k, frame in enumerate(model.frame_sizes):
    tier = p[f'tier{k}']
    frames = x[:, c - frame:c - frame + n].reshape(x.shape[0], n // frame, frame)
    inp = frames @ tier['in']['kernel'] + tier['in']['bias']
    if cond is not None:
      inp = inp + cond
    state, h = rnn(model, tier, states[k], inp)
    new.append(state)
    cond = upsample(tier, h)  # [B, n / (next frame), D]
  f = model.frame_sizes[-1]
  windows = jnp.stack([codes[:, c - f + i:c - f + i + n] for i in range(f)], axis=2)
  return mlp_logits(model, p, windows, cond), new
