"""The layers of normalising flows over audio, each invertible with a tractable log-determinant.

Every layer is a linen Module with two methods over channels-last arrays:

    forward(x, ...) -> (z, log_det)     log_det [B]: log |det dz/dx| of each row
    inverse(z, ...) -> x                the exact inverse of forward

    InvertibleConv1x1   a learned channel mixing W [C, C] (Glow), optionally LU-parameterised
                        (W = P L (U + diag(sign(s) exp(log|s|)))), initialised to a rotation
    ActNorm             per-channel affine, initialised from the first training batch to zero
                        mean and unit variance (its data statistics live in the 'actnorm'
                        collection, the model state of models/__init__.py)
    AffineCoupling      the second half of the channels scaled and shifted by a WaveNet-like
                        network (`WN`) of the first half and the conditioning (Real NVP)
    squeeze/unsqueeze   [B, T, C] <-> [B, T/g, g C], consecutive steps grouped into channels

plus the conditioning `Upsampler` (mel frames -> one vector per sample) and `WN`, the
non-causal gated network of the couplings (WaveGlow's "WN"). The log-determinants are summed
over every position and channel of a row, so a flow's total is the sum of its layers'.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from models.layers import params as params_lib


def shift(x: jax.Array, s: int, axis: int = 1) -> jax.Array:
  """x moved by s steps along `axis` (s > 0: delayed, zeros in front; s < 0: advanced)."""
  n = x.shape[axis]
  if s == 0:
    return x
  if abs(s) >= n:
    return jnp.zeros_like(x)
  pad = [(0, 0)] * x.ndim
  pad[axis] = (s, 0) if s > 0 else (0, -s)
  kept = jax.lax.slice_in_dim(x, 0, n - s, axis=axis) if s > 0 else jax.lax.slice_in_dim(
      x, -s, n, axis=axis)
  return jnp.pad(kept, pad)


def squeeze(x: jax.Array, g: int) -> jax.Array:
  """[B, T, C] -> [B, T/g, g C]: each g consecutive steps become one step of g C channels
  (step-major), so position n of the result covers steps [n g, (n + 1) g)."""
  b, t, c = x.shape
  if t % g:
    raise ValueError(f'{t} steps do not squeeze into groups of {g}')
  return x.reshape(b, t // g, g * c)


def unsqueeze(x: jax.Array, g: int) -> jax.Array:
  """The inverse of `squeeze`: [B, N, g C] -> [B, N g, C]."""
  b, n, c = x.shape
  return x.reshape(b, n * g, c // g)


class WN(nn.Module):
  """A WaveNet-like network: x [B, N, C_in], cond [B, N, D] -> [B, N, out_features].

  A 1x1 input projection to `channels`, then `num_layers` gated layers (dilated convolution of
  width `kernel_size` centred on each step, dilations 1, 2, 4, ..., 2^(cycle - 1) repeated,
  tanh x sigmoid, with the conditioning projected into every layer's gates), residual and skip
  sums, and a zero initialised 1x1 output projection, so that a coupling starts as the
  identity. `causal`: the taps end at each step instead (steps n - (k - 1) d .. n), so output
  n depends on x[:, :n + 1] only (an inverse autoregressive flow's network).
  """
  out_features: int
  channels: int = 256
  num_layers: int = 8
  kernel_size: int = 3
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  causal: bool = False
  dilation_cycle: int | None = None  # None: no repeat (1, 2, ..., 2^(num_layers - 1))

  @property
  def dilations(self) -> tuple[int, ...]:
    cycle = self.dilation_cycle or self.num_layers
    return tuple(2 ** (i % cycle) for i in range(self.num_layers))

  @property
  def reach(self) -> int:
    """Steps before (causal) or on either side of (centred) a step that its output reads."""
    k = self.kernel_size
    return sum(self.dilations) * ((k - 1) if self.causal else k // 2)

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    if self.kernel_size % 2 == 0 and not self.causal:
      raise ValueError(f'kernel_size={self.kernel_size}: expected an odd width (centred taps)')
    centre = self.kernel_size - 1 if self.causal else self.kernel_size // 2
    r, k, dtype = self.channels, self.kernel_size, jnp.dtype(self.dtype)
    dense = lambda name, *a, **kw: params_lib.dense(self, name, *a, **kw)
    start = dense('start', x.shape[-1], r, None, 'embed')
    cond_p = dense('cond', cond.shape[-1], (self.num_layers, 2, r), 'cond', (None, None, 'mlp'))
    h = (x.astype(dtype) @ start['kernel'].astype(dtype) + start['bias'].astype(dtype))
    c = jnp.einsum('bnd,dlgr->bnlgr', cond.astype(dtype), cond_p['kernel'].astype(dtype))
    c = c + cond_p['bias'].astype(dtype)
    skip = 0.
    for i, d in enumerate(self.dilations):
      last = i == self.num_layers - 1
      conv = dense(f'conv{i}', k * r, (2, r), 'embed', (None, 'mlp'))
      out = dense(f'res_skip{i}', r, r if last else 2 * r, 'mlp', 'embed')
      taps = jnp.concatenate([shift(h, (centre - j) * d) for j in range(k)], axis=-1)
      y = jnp.einsum('bnc,cgr->bngr', taps, conv['kernel'].astype(dtype))
      y = y + conv['bias'].astype(dtype) + c[:, :, i]
      g = jnp.tanh(y[..., 0, :]) * jax.nn.sigmoid(y[..., 1, :])
      g = nn.with_logical_constraint(g, ('batch', 'time', 'mlp'))
      o = g @ out['kernel'].astype(dtype) + out['bias'].astype(dtype)
      if last:
        skip = skip + o
      else:
        h = h + o[..., :r]
        skip = skip + o[..., r:]
    end = params_lib.param(self, 'end_kernel', (r, self.out_features), ('embed', None),
                           nn.initializers.zeros)
    end_b = params_lib.param(self, 'end_bias', (self.out_features,), (None,),
                             nn.initializers.zeros)
    return (skip.astype(jnp.float32) @ end.astype(jnp.float32)) + end_b.astype(jnp.float32)


class AffineCoupling(nn.Module):
  """z = [x_a, x_b exp(log_s) + t], (log_s, t) = WN(x_a, cond); x_a the first half of the
  `features` channels (the smaller half when odd)."""
  features: int
  channels: int = 256
  num_layers: int = 8
  kernel_size: int = 3
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  def setup(self):
    self.half = self.features // 2
    self.wn = WN(2 * (self.features - self.half), self.channels, self.num_layers,
                 self.kernel_size, self.dtype, self.param_dtype)

  def _scale_shift(self, xa, cond):
    out = self.wn(xa, cond)
    nb = self.features - self.half
    return out[..., :nb], out[..., nb:]

  def forward(self, x: jax.Array, cond: jax.Array):
    xa, xb = x[..., :self.half], x[..., self.half:]
    log_s, t = self._scale_shift(xa, cond)
    z = jnp.concatenate([xa, xb * jnp.exp(log_s) + t], axis=-1)
    return z, jnp.sum(log_s, axis=(1, 2))

  def inverse(self, z: jax.Array, cond: jax.Array) -> jax.Array:
    za, zb = z[..., :self.half], z[..., self.half:]
    log_s, t = self._scale_shift(za, cond)
    return jnp.concatenate([za, (zb - t) * jnp.exp(-log_s)], axis=-1)


def _rotation(c: int, seed: int) -> np.ndarray:
  """A random c x c rotation (orthogonal, determinant +1), from numpy's generator `seed`."""
  q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(c, c)))
  q = q * np.sign(np.diag(r))
  if np.linalg.det(q) < 0:
    q[:, 0] = -q[:, 0]
  return q.astype(np.float32)


class InvertibleConv1x1(nn.Module):
  """z = x W over channels (a 1x1 convolution), log_det = N log |det W| for N positions.

  Plain: W is a parameter initialised to a random rotation drawn from the init key. LU (Glow's
  option, `lu=True`): W = P L (U + diag(sign_s exp(log_s))) with P and sign_s fixed, from the
  LU decomposition of a rotation drawn by numpy from `seed` (so they are constants of the
  module, not of the key), L unit lower- and U strictly upper-triangular parameters: the log
  determinant is N sum(log_s), with no determinant to compute.
  """
  features: int
  lu: bool = False
  seed: int = 0  # the LU variant's fixed rotation
  param_dtype: str = 'float32'

  def setup(self):
    c = self.features
    if not self.lu:
      def init(key, shape, dtype):
        q, r = jnp.linalg.qr(jax.random.normal(key, shape, jnp.float32))
        q = q * jnp.sign(jnp.diag(r))
        q = q.at[:, 0].multiply(jnp.sign(jnp.linalg.det(q)))  # a rotation: det +1
        return q.astype(dtype)
      self.w = params_lib.param(self, 'kernel', (c, c), (None, None), init)
      return
    p, l, u = scipy.linalg.lu(_rotation(c, self.seed))
    s = np.diag(u)
    self.p, self.sign_s = jnp.asarray(p, jnp.float32), jnp.asarray(np.sign(s), jnp.float32)
    const = lambda v: lambda *_: jnp.asarray(v, jnp.dtype(self.param_dtype))
    self.l = params_lib.param(self, 'lower', (c, c), (None, None), const(l))
    self.u = params_lib.param(self, 'upper', (c, c), (None, None), const(np.triu(u, 1)))
    self.log_s = params_lib.param(self, 'log_s', (c,), (None,), const(np.log(np.abs(s))))

  def weight(self) -> tuple[jax.Array, jax.Array]:
    """(W, log |det W|)."""
    if not self.lu:
      w = self.w.astype(jnp.float32)
      return w, jnp.linalg.slogdet(w)[1]
    c = self.features
    lower = jnp.tril(self.l.astype(jnp.float32), -1) + jnp.eye(c)
    upper = jnp.triu(self.u.astype(jnp.float32), 1) + jnp.diag(
        self.sign_s * jnp.exp(self.log_s.astype(jnp.float32)))
    return self.p @ lower @ upper, jnp.sum(self.log_s.astype(jnp.float32))

  def forward(self, x: jax.Array):
    w, log_det = self.weight()
    z = jnp.einsum('bnc,cd->bnd', x, w)
    return z, jnp.full(x.shape[:1], x.shape[1] * log_det)

  def inverse(self, z: jax.Array) -> jax.Array:
    w, _ = self.weight()
    return jnp.einsum('bnd,dc->bnc', z, jnp.linalg.inv(w))


class ActNorm(nn.Module):
  """z = (x + loc) exp(log_scale) per channel, log_det = N sum(log_scale) for N positions.

  Data-dependent initialisation (Glow): the first `forward` of a training step with the
  'actnorm' collection mutable (the family's loss) stores the batch's per-channel mean and
  log standard deviation as state['model_state']['actnorm'] and sets its 'initialized' flag;
  from then on the learned `loc` and `log_scale` (zero at init) are offsets from them. Until
  then a forward uses the batch's own statistics and an inverse the stored ones (zeros: the
  identity). `init` on a dummy batch leaves the flag unset.
  """
  features: int
  param_dtype: str = 'float32'

  def setup(self):
    c = self.features
    zeros = nn.initializers.zeros
    self.loc = params_lib.param(self, 'loc', (c,), (None,), zeros)
    self.log_scale = params_lib.param(self, 'log_scale', (c,), (None,), zeros)
    self.data_loc = self.variable('actnorm', 'loc', jnp.zeros, (c,), jnp.float32)
    self.data_log_scale = self.variable('actnorm', 'log_scale', jnp.zeros, (c,), jnp.float32)
    self.initialized = self.variable('actnorm', 'initialized', jnp.zeros, (), jnp.bool_)

  def _affine(self, x: jax.Array | None = None):
    loc, log_scale = self.data_loc.value, self.data_log_scale.value
    if x is not None and not self.is_initializing():
      xs = jax.lax.stop_gradient(x.astype(jnp.float32))
      mean = jnp.mean(xs, axis=(0, 1))
      std = jnp.sqrt(jnp.mean(jnp.square(xs - mean), axis=(0, 1)))
      done = self.initialized.value
      loc = jnp.where(done, loc, -mean)
      log_scale = jnp.where(done, log_scale, -jnp.log(std + 1e-6))
      if self.is_mutable_collection('actnorm'):
        self.data_loc.value, self.data_log_scale.value = loc, log_scale
        self.initialized.value = jnp.ones((), jnp.bool_)
    return loc + self.loc.astype(jnp.float32), log_scale + self.log_scale.astype(jnp.float32)

  def forward(self, x: jax.Array):
    loc, log_scale = self._affine(x)
    z = (x + loc) * jnp.exp(log_scale)
    return z, jnp.full(x.shape[:1], x.shape[1] * jnp.sum(log_scale))

  def inverse(self, z: jax.Array) -> jax.Array:
    loc, log_scale = self._affine()
    return z * jnp.exp(-log_scale) - loc


class Upsampler(nn.Module):
  """Frame features [B, F, D] -> one vector per sample [B, F hop, D], hop = prod(strides).

  Each stage is a transposed convolution of width 2 s and stride s (as WaveGlow's, FloWaveNet's
  and WaveFlow's upsamplers): the s outputs between the centres of inputs n and n + 1 are a
  learned linear function of those two (the last input repeated past the end), with a leaky
  ReLU (slope 0.4) between stages. Frame f is centred on sample f hop (data/specs.py), so its
  hop samples [f hop, (f + 1) hop) lie between frames f and f + 1.
  """
  strides: tuple[int, ...]
  param_dtype: str = 'float32'

  @property
  def reach_frames(self) -> int:
    """Frames after a sample's own that it depends on (one per stage, at most)."""
    return len(self.strides)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    d = x.shape[-1]
    for i, s in enumerate(self.strides):
      p = params_lib.dense(self, f'stage{i}', (2, d), (s, d), (None, 'cond'), (None, None))
      nxt = jnp.concatenate([x[:, 1:], x[:, -1:]], axis=1)
      y = jnp.einsum('bnkd,kdse->bnse', jnp.stack([x, nxt], axis=2), p['kernel'])
      x = (y + p['bias']).reshape(x.shape[0], x.shape[1] * s, d)
      if i < len(self.strides) - 1:
        x = jax.nn.leaky_relu(x, 0.4)
    return x


class AutoregressiveFlow2D(nn.Module):
  """WaveFlow's flow over audio folded into rows: x [B, H, W] -> z = x exp(log_s) + t, where
  (log_s, t) at row r come from rows < r of x (and the conditioning at row r) through a 2-D
  gated network, causal along H and centred along W.

  The network sees x shifted down one row (row 0 sees zeros), then `num_layers` dilated 2-D
  convolutions of `kernel_size` x `kernel_size` taps: rows r, r - d_h, r - 2 d_h (causal)
  by columns c - d_w, c, c + d_w, with d_w = 2^i and d_h = 2^(i mod m), m the least number of
  doublings whose reach covers H. `forward` is one parallel pass; `inverse` recovers the rows
  in order, H passes of one row each (lax.fori_loop over a cache of the rows above).
  """
  height: int
  cond_features: int
  channels: int = 128
  num_layers: int = 8
  kernel_size: int = 3
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @property
  def dilations(self) -> tuple[tuple[int, int], ...]:
    """(d_h, d_w) of each layer."""
    m = 1
    while (self.kernel_size - 1) * (2 ** m - 1) + 1 < self.height:
      m += 1
    return tuple((2 ** (i % m), 2 ** i) for i in range(self.num_layers))

  @nn.compact
  def _params(self) -> dict:
    r, k, d = self.channels, self.kernel_size, self.cond_features
    dense = lambda name, *a, **kw: params_lib.dense(self, name, *a, **kw)
    p = {'start': dense('start', 1, r, None, 'embed'),
         'cond': dense('cond', d, (self.num_layers, 2, r), 'cond', (None, None, 'mlp'))}
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      p[f'conv{i}'] = dense(f'conv{i}', (k, k, r), (2, r), (None, None, 'embed'), (None, 'mlp'))
      p[f'res_skip{i}'] = dense(f'res_skip{i}', r, r if last else 2 * r, 'mlp', 'embed')
    p['end'] = {'kernel': params_lib.param(self, 'end_kernel', (r, 2), ('embed', None),
                                           nn.initializers.zeros),
                'bias': params_lib.param(self, 'end_bias', (2,), (None,), nn.initializers.zeros)}
    return p

  def _layer(self, p: dict, i: int, taps: jax.Array, c: jax.Array):
    """Layer i on its taps [..., k (rows), k (columns), R] and projected conditioning
    [..., 2, R]: (residual update or None for the last layer, skip contribution)."""
    r = self.channels
    y = jnp.einsum('...ijc,ijcgr->...gr', taps, p[f'conv{i}']['kernel'])
    y = y + p[f'conv{i}']['bias'] + c
    g = jnp.tanh(y[..., 0, :]) * jax.nn.sigmoid(y[..., 1, :])
    o = g @ p[f'res_skip{i}']['kernel'] + p[f'res_skip{i}']['bias']
    if i == self.num_layers - 1:
      return None, o
    return o[..., :r], o[..., r:]

  def _column_taps(self, rows: list[jax.Array], dw: int, axis: int) -> jax.Array:
    """Each of `rows` [..., W, R] at columns c + (b - k // 2) dw -> [..., W, k, k, R]."""
    k = self.kernel_size
    return jnp.stack([jnp.stack([shift(row, (k // 2 - b) * dw, axis=axis) for b in range(k)],
                                axis=-2) for row in rows], axis=-3)

  def _head(self, p: dict, skip: jax.Array):
    out = skip.astype(jnp.float32) @ p['end']['kernel'].astype(jnp.float32)
    out = out + p['end']['bias'].astype(jnp.float32)
    return out[..., 0], out[..., 1]

  def _prepare(self, cond: jax.Array):
    """(the parameters in the compute dtype, the conditioning projected for every layer
    [B, H, W, L, 2, R])."""
    p = params_lib.cast(self._params(), jnp.dtype(self.dtype))
    c = jnp.einsum('bhwd,dlgr->bhwlgr', cond.astype(jnp.dtype(self.dtype)), p['cond']['kernel'])
    return p, c + p['cond']['bias']

  def forward(self, x: jax.Array, cond: jax.Array):
    """One parallel pass over every row."""
    p, c = self._prepare(cond)
    k = self.kernel_size
    h = shift(x, 1, axis=1)[..., None].astype(p['start']['kernel'].dtype)
    h = h @ p['start']['kernel'] + p['start']['bias']  # [B, H, W, R]
    skip = 0.
    for i, (dh, dw) in enumerate(self.dilations):
      rows = [shift(h, a * dh, axis=1) for a in range(k - 1, -1, -1)]  # r - (k-1) d_h .. r
      res, sk = self._layer(p, i, self._column_taps(rows, dw, axis=2), c[:, :, :, i])
      skip = skip + sk
      if res is not None:
        h = h + res
    log_s, t = self._head(p, skip)
    return x * jnp.exp(log_s) + t, jnp.sum(log_s, axis=(1, 2))

  def inverse(self, z: jax.Array, cond: jax.Array) -> jax.Array:
    """Row by row: pass r runs row r alone through the layers, reading the rows above it from
    a cache of every layer's inputs (as WaveNet's cached sampler does along time), so the H
    passes together cost one forward pass."""
    p, c = self._prepare(cond)
    k, b, height, w = self.kernel_size, *z.shape
    # One buffer per layer (a tuple, so that each row's write updates its buffer in place).
    cache = tuple(jnp.zeros((b, height, w, self.channels), c.dtype)
                  for _ in range(self.num_layers))

    def row(r, carry):
      x, cache = carry
      above = jax.lax.dynamic_index_in_dim(x, jnp.maximum(r - 1, 0), axis=1, keepdims=False)
      above = jnp.where(r > 0, above, 0.)[..., None].astype(c.dtype)  # [B, W, 1]
      h = above @ p['start']['kernel'] + p['start']['bias']  # [B, W, R]
      skip, cache = 0., list(cache)
      for i, (dh, dw) in enumerate(self.dilations):
        cache[i] = jax.lax.dynamic_update_index_in_dim(cache[i], h, r, axis=1)
        rows = []
        for a in range(k - 1, -1, -1):
          src = r - a * dh
          got = jax.lax.dynamic_index_in_dim(cache[i], jnp.maximum(src, 0), axis=1,
                                             keepdims=False)
          rows.append(jnp.where(src >= 0, got, 0.))
        c_r = jax.lax.dynamic_index_in_dim(c[:, :, :, i], r, axis=1, keepdims=False)
        res, sk = self._layer(p, i, self._column_taps(rows, dw, axis=1), c_r)
        skip = skip + sk
        if res is not None:
          h = h + res
      log_s, t = self._head(p, skip)
      z_r = jax.lax.dynamic_index_in_dim(z, r, axis=1, keepdims=False)
      x_r = ((z_r - t) * jnp.exp(-log_s)).astype(x.dtype)
      return jax.lax.dynamic_update_index_in_dim(x, x_r, r, axis=1), tuple(cache)

    x, _ = jax.lax.fori_loop(0, height, row, (jnp.zeros_like(z), cache))
    return x
