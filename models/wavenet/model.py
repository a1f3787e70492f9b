"""The WaveNet network, its losses, and drawing one sample from its output distribution.

The architecture and its conventions are described in models/wavenet/__init__.py.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import autoregressive
from models.layers import conditioning
from models.layers import params as params_lib
from models.layers import sampling
from models.wavenet import kernel as kernel_lib

OUTPUTS = ('softmax', 'mixture', 'gaussian')
LOG_SCALE_MIN = -7.  # the least log scale of a logistic or Gaussian output (ClariNet's floor)


def _shift(x: jax.Array, s: int) -> jax.Array:
  """x delayed by s steps along axis 1, zeros in front."""
  if s == 0:
    return x
  if s >= x.shape[1]:
    return jnp.zeros_like(x)
  pad = [(0, 0)] * x.ndim
  pad[1] = (s, 0)
  return jnp.pad(x[:, :x.shape[1] - s], pad)


def gate(y: jax.Array) -> jax.Array:
  """[..., 2, H] -> [..., H]: tanh(filter) * sigmoid(gate)."""
  return jnp.tanh(y[..., 0, :]) * jax.nn.sigmoid(y[..., 1, :])


def head(p: dict, skips: jax.Array) -> jax.Array:
  h = jax.nn.relu(skips)
  h = jax.nn.relu(h @ p['head_hidden']['kernel'] + p['head_hidden']['bias'])
  return h @ p['head_out']['kernel'] + p['head_out']['bias']


class Model(nn.Module):
  """WaveNet; `Model(**config.model)`. Logical axes: batch, time, embed (residual), mlp (gate),
  skip, vocab (outputs), cond (conditioning channels)."""
  num_classes: int = 256  # 2^bits of config.input (models.create derives it)
  encoding: str = 'mu_law'  # config.input.encoding (derived)
  residual_channels: int = 64
  gate_channels: int = 128  # outputs of the dilated conv: half tanh filter, half sigmoid gate
  skip_channels: int = 64
  kernel_size: int = 2
  num_layers: int = 30
  dilation_cycle: int = 10
  output: str = 'softmax'
  num_mixtures: int = 10
  num_global: int = 0  # global conditioning ids; 0: none
  global_key: str | None = None  # the batch key of the ids ([B] int), e.g. 'instrument'
  global_channels: int = 16
  local_keys: tuple[str, ...] = ()  # batch frame features of the local conditioning, in order
  local_features: int = 0  # D of the frame features (derived from local_keys); 0: none
  local_channels: int = 64
  hop_length: int = 0  # samples per conditioning frame (derived from the dataset)
  dtype: str = 'float32'  # activations
  param_dtype: str = 'float32'
  # The residual layers as the CPU kernel (kernel.stack): None takes it where it runs (float32,
  # the CPU, no sharded mesh; built at install), False keeps the pure-JAX layers.
  kernel: bool | None = None

  def __post_init__(self):
    if self.output not in OUTPUTS:
      raise ValueError(f'model.output={self.output!r}: expected one of {", ".join(OUTPUTS)}')
    if self.gate_channels % 2:
      raise ValueError(f'model.gate_channels={self.gate_channels}: expected an even number')
    if self.local_features and self.hop_length <= 0:
      raise ValueError(f'model.hop_length={self.hop_length}: local conditioning needs the '
                       'samples per frame')
    if self.global_key is not None and not self.num_global:
      raise ValueError(f'model.global_key={self.global_key!r} needs model.num_global > 0')
    autoregressive.check_encoding(self)
    super().__post_init__()

  @property
  def conditions(self) -> tuple[str, ...]:
    """The batch keys the model reads besides 'audio'."""
    return tuple(self.local_keys) + ((self.global_key,) if self.global_key else ())

  def conditioning(self, batch: dict) -> dict:
    """A batch (or a sampler's conditioning dict) -> `local` [B, F, D] and `global_ids` [B]."""
    out = {}
    if self.local_features:
      if not self.local_keys:
        raise ValueError(f'model.local_features={self.local_features}: set model.local_keys, '
                         'the batch keys of the frame features')
      out['local'] = conditioning.frames(batch, self.local_keys)
    if self.num_global:
      if not self.global_key:
        raise ValueError(f'model.num_global={self.num_global}: set model.global_key, the batch '
                         'key of the ids')
      out['global_ids'] = conditioning.ids(batch, self.global_key)
    return out

  @property
  def dilations(self) -> tuple[int, ...]:
    return tuple(2 ** (i % self.dilation_cycle) for i in range(self.num_layers))

  @property
  def receptive_field(self) -> int:
    """Samples of input that the output at one position depends on (itself included)."""
    return (self.kernel_size - 1) * (sum(self.dilations) + 1) + 1

  @property
  def out_features(self) -> int:
    return {'softmax': self.num_classes, 'mixture': 3 * self.num_mixtures,
            'gaussian': 2}[self.output]

  def _p(self, name, shape, axes, init):
    return params_lib.param(self, name, shape, axes, init)

  def _dense(self, name, d_in, d_out, axes_in, axes_out):
    return params_lib.dense(self, name, d_in, d_out, axes_in, axes_out)

  @nn.compact
  def _params(self) -> dict:
    """Creates (init) or fetches (apply) every parameter, as the nested dict the sampler uses."""
    k, r, h, s = (self.kernel_size, self.residual_channels, self.gate_channels // 2,
                  self.skip_channels)
    d_in = self.num_classes if self.output == 'softmax' else 1
    # One-hot inputs have k active rows, so the stem's fan-in is k, not k x Q.
    p = {'stem': {'kernel': self._p('stem_kernel', (k, d_in, r), (None, None, 'embed'),
                                    nn.initializers.normal(k ** -0.5)),
                  'bias': self._p('stem_bias', (r,), ('embed',), nn.initializers.zeros)}}
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      lp = {'conv': self._dense(f'l{i}_conv', k * r, (2, h), 'embed', (None, 'mlp')),
            'skip': self._dense(f'l{i}_skip', h, s, 'mlp', 'skip')}
      if not last:  # the last layer's residual output would go nowhere
        lp['res'] = self._dense(f'l{i}_res', h, r, 'mlp', 'embed')
      if self.num_global:
        lp['global'] = self._dense(f'l{i}_global', self.global_channels, (2, h), 'cond',
                                   (None, 'mlp'))
      if self.local_features:
        lp['local'] = self._dense(f'l{i}_local', self.local_channels, (2, h), 'cond',
                                  (None, 'mlp'))
      p[f'layer{i}'] = lp
    p['head_hidden'] = self._dense('head_hidden', s, s, 'skip', None)
    p['head_out'] = self._dense('head_out', s, self.out_features, None, 'vocab')
    if self.num_global:
      p['global_embed'] = self._p('global_embed', (self.num_global, self.global_channels),
                                  (None, 'cond'), nn.initializers.normal(1.0))
    if self.local_features:
      p['local_conv'] = self._dense('local_conv', 3 * self.local_features, self.local_channels,
                                    None, 'cond')
    return p

  def __call__(self, codes: jax.Array, local: jax.Array | None = None,
               global_ids: jax.Array | None = None) -> jax.Array:
    """codes [B, T] int32, local [B, F, D] (F = ceil(T / hop)), global_ids [B] -> [B, T, Q]."""
    dtype = jnp.dtype(self.dtype)
    # Mixed precision: parameters are kept in param_dtype (and so are their gradients and the
    # optimizer state); the network computes in dtype; the logits and losses are float32.
    p = params_lib.cast(self._params(), dtype)
    x = stem(self, p, codes).astype(dtype)  # [B, T, R]
    x = nn.with_logical_constraint(x, ('batch', 'time', 'embed'))
    lc = condition(self, p, local) if self.local_features else None  # [B, F, C]
    gc = p['global_embed'][global_ids] if self.num_global else None  # [B, G]
    if self.kernel or (self.kernel is None and kernel_lib.usable(dtype) and
                       kernel_lib.unsharded()):
      skips = self._kernel_layers(p, x, gc, lc)
    else:
      skips = self._layers(p, x, gc, lc)
    out = head(p, skips)
    return nn.with_logical_constraint(out.astype(jnp.float32), ('batch', 'time', 'vocab'))

  def _layers(self, p: dict, x: jax.Array, gc: jax.Array | None,
              lc: jax.Array | None) -> jax.Array:
    """The residual layers' summed skip outputs [B, T, S] of the stem's output x [B, T, R],
    given the global [B, G] and local [B, F, C] conditioning (None without)."""
    t, h = x.shape[1], self.gate_channels // 2
    if self.local_features:
      frame = jnp.minimum((jnp.arange(t) + 1) // self.hop_length, lc.shape[1] - 1)  # [T]
    zs = []
    for i, d in enumerate(self.dilations):
      lp = p[f'layer{i}']
      # Tap j of the dilated conv sees x delayed by (k - 1 - j) d: one matmul per tap, summed
      # (concatenating the taps into one [B, T, kR] matmul input cost a copy per layer and was
      # 5-13% slower on CPU; both taps in one matmul with shifted outputs 2.6x slower).
      kernel = lp['conv']['kernel'].reshape(self.kernel_size, -1, 2, h)  # [k, R, 2, H]
      y = sum(jnp.einsum('btc,cgh->btgh', _shift(x, (self.kernel_size - 1 - j) * d), kernel[j])
              for j in range(self.kernel_size))
      y = y + lp['conv']['bias']  # [B, T, 2, H]
      if self.num_global:
        g = jnp.einsum('bc,cgh->bgh', gc, lp['global']['kernel']) + lp['global']['bias']
        y = y + g[:, None]  # the same offset at every position
      if self.local_features:
        # Project at the frame rate, then hold each frame for hop samples.
        f = jnp.einsum('bfc,cgh->bfgh', lc, lp['local']['kernel']) + lp['local']['bias']
        y = y + f[:, frame]
      z = nn.with_logical_constraint(gate(y), ('batch', 'time', 'mlp'))  # [B, T, H]
      zs.append(z)
      if 'res' in lp:
        x = x + z @ lp['res']['kernel'] + lp['res']['bias']
        x = nn.with_logical_constraint(x, ('batch', 'time', 'embed'))
    # All layers' skip projections as one matmul over (layer, channel): the same sum, but one
    # large GEMM (forward and backward) instead of L small ones, ~10% faster on CPU.
    skips = jnp.einsum('btlh,lhs->bts', jnp.stack(zs, axis=2), jnp.stack(
        [p[f'layer{i}']['skip']['kernel'] for i in range(self.num_layers)]))
    skips = skips + sum(p[f'layer{i}']['skip']['bias'] for i in range(self.num_layers))
    return skips

  def _kernel_layers(self, p: dict, x: jax.Array, gc: jax.Array | None,
                     lc: jax.Array | None) -> jax.Array:
    """The residual layers' summed skip outputs [B, T, S] of the stem's output x, as the CPU
    kernel computes them (kernel.stack: the arithmetic of _layers)."""
    l, h2 = self.num_layers, self.gate_channels
    conv, bias, out, out_b = stacked_layers(self, p)
    offsets = bias[:, None, None]  # [L, 1, 1, 2H]
    if self.num_global:  # [B, L, 2, H] -> [L, B, 1, 2H]
      g = layer_conditioning(self, p, gc, 'global')
      offsets = offsets + jnp.moveaxis(g, 1, 0).reshape(l, -1, 1, h2)
    if self.local_features:  # [B, F, L, 2, H] -> [L, B, F, 2H], frame min((t + 1) // hop, F - 1)
      f = layer_conditioning(self, p, lc, 'local')
      offsets = offsets + jnp.moveaxis(f, 2, 0).reshape(l, *f.shape[:2], h2)
    return kernel_lib.stack(x, conv, offsets, out, out_b, self.dilations,
                            self.hop_length if self.local_features else 0)


def layer_conditioning(model: Model, p: dict, cond: jax.Array, name: str) -> jax.Array:
  """Per-layer gate offsets of a conditioning vector: [..., C] -> [..., L, 2, H]."""
  return jnp.stack([jnp.einsum('...c,cgh->...gh', cond, p[f'layer{i}'][name]['kernel']) +
                    p[f'layer{i}'][name]['bias'] for i in range(model.num_layers)], axis=-3)


def stacked_layers(model: Model, p: dict) -> tuple[jax.Array, ...]:
  """The residual layers' parameters stacked as the CPU kernels take them (unpacked): the
  dilated convolutions [L, kR, 2H] tap by tap, their biases [L, 2H], the residual and skip
  kernels side by side [L, H, R + S] and their biases [L, R + S], the last layer's absent
  residual part zeros."""
  r, h2 = model.residual_channels, model.gate_channels
  layers = [p[f'layer{i}'] for i in range(model.num_layers)]
  skip = layers[-1]['skip']
  none = {'kernel': jnp.zeros((h2 // 2, r), skip['kernel'].dtype),
          'bias': jnp.zeros((r,), skip['bias'].dtype)}
  side = lambda lp, n: jnp.concatenate([lp.get('res', none)[n], lp['skip'][n]], -1)
  return (jnp.stack([lp['conv']['kernel'].reshape(-1, h2) for lp in layers]),
          jnp.stack([lp['conv']['bias'].reshape(h2) for lp in layers]),
          jnp.stack([side(lp, 'kernel') for lp in layers]),
          jnp.stack([side(lp, 'bias') for lp in layers]))


def stem(model: Model, p: dict, codes: jax.Array) -> jax.Array:
  """The causal input convolution: codes [B, T] -> [B, T, R]. The continuous outputs'
  models also take float values in [-1, 1] in place of codes (a distillation teacher scores
  its student's continuous samples, differentiably)."""
  w = p['stem']['kernel']  # [k, D, R]
  k = model.kernel_size
  if model.output == 'softmax':
    return sum(_shift(w[j][codes], k - 1 - j) for j in range(k)) + p['stem']['bias']
  v = (codes if jnp.issubdtype(codes.dtype, jnp.floating) else value(model, codes))[..., None]
  return sum(_shift(v * w[j, 0], k - 1 - j) for j in range(k)) + p['stem']['bias']


def value(model: Model, codes: jax.Array) -> jax.Array:
  """Codes 0..Q-1 -> levels evenly spaced in [-1, 1] (the mixture output's input and target)."""
  return codes.astype(jnp.float32) * (2. / (model.num_classes - 1)) - 1.


def condition(model: Model, p: dict, local: jax.Array) -> jax.Array:
  """Frame features [B, F, D] -> conditioning [B, F, C] (a width-3 conv over frames, tanh)."""
  if local.shape[-1] != model.local_features:
    raise ValueError(f'local conditioning has {local.shape[-1]} features per frame; '
                     f'model.local_features={model.local_features}')
  x = local.astype(p['local_conv']['kernel'].dtype)
  taps = jnp.concatenate([jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1], x,
                          jnp.pad(x, ((0, 0), (0, 1), (0, 0)))[:, 1:]], axis=-1)
  return jnp.tanh(taps @ p['local_conv']['kernel'] + p['local_conv']['bias'])


def unboxed_params(model: Model, variables: dict) -> dict:
  """The nested parameter dict of `variables` ({'params': ...} from init or a checkpoint)."""
  return params_lib.nested(model, variables)


# ------------------------------------------------------------------------------------------------
# Losses and sampling from the output distribution.


def nll(model: Model, out: jax.Array, targets: jax.Array) -> jax.Array:
  """Negative log-likelihood in nats of `targets` [B, T] codes under `out` [B, T, Q or 3M]."""
  if model.output == 'softmax':
    return sampling.softmax_nll(out, targets)
  if model.output == 'gaussian':
    return _gaussian_nll(model, out, value(model, targets))
  return _mixture_nll(model, out, value(model, targets))


def mixture_params(model: Model, out: jax.Array):
  """(logit weights, means, log scales) [..., M] of a mixture output [..., 3M]."""
  m = model.num_mixtures
  logit_w, mu, log_s = out[..., :m], out[..., m:2 * m], out[..., 2 * m:]
  return logit_w, mu, jnp.maximum(log_s, LOG_SCALE_MIN)


def gaussian_params(out: jax.Array):
  """(mean, log standard deviation) [...] of a Gaussian output [..., 2]."""
  return out[..., 0], jnp.maximum(out[..., 1], LOG_SCALE_MIN)


def _gaussian_nll(model: Model, out: jax.Array, x: jax.Array) -> jax.Array:
  """A discretised Gaussian over levels with spacing 2/(Q-1): the mass of each level's bin, the
  lowest and highest levels taking the tails (as the mixture's bins)."""
  mu, log_s = gaussian_params(out.astype(jnp.float32))
  half = 1. / (model.num_classes - 1)
  inv_s = jnp.exp(-log_s)
  plus, minus = inv_s * (x - mu + half), inv_s * (x - mu - half)
  log_cdf_plus = jax.scipy.special.log_ndtr(plus)
  log_sf_minus = jax.scipy.special.log_ndtr(-minus)
  # log(Phi(plus) - Phi(minus)) on the side of the mean where it does not cancel.
  upper = x - mu > 0
  hi = jnp.where(upper, -minus, plus)
  lo = jnp.where(upper, -plus, minus)
  log_hi = jax.scipy.special.log_ndtr(hi)
  delta = -jnp.expm1(jax.scipy.special.log_ndtr(lo) - log_hi)
  log_pdf_mid = (-0.5 * jnp.square(inv_s * (x - mu)) - log_s - 0.5 * math.log(2 * math.pi) +
                 jnp.log(2. * half))
  inner = jnp.where(delta > 1e-5, log_hi + jnp.log(jnp.maximum(delta, 1e-12)), log_pdf_mid)
  logp = jnp.where(x < -1. + half, log_cdf_plus, jnp.where(x > 1. - half, log_sf_minus, inner))
  return -logp


def _mixture_nll(model: Model, out: jax.Array, x: jax.Array) -> jax.Array:
  """Discretised logistic mixture (Salimans et al. 2017) over levels with spacing 2/(Q-1)."""
  logit_w, mu, log_s = mixture_params(model, out.astype(jnp.float32))
  half = 1. / (model.num_classes - 1)
  c = x[..., None] - mu
  inv_s = jnp.exp(-log_s)
  plus, minus = inv_s * (c + half), inv_s * (c - half)
  log_cdf_plus = plus - jax.nn.softplus(plus)  # log sigmoid(plus), for the lowest level
  log_one_minus_cdf_minus = -jax.nn.softplus(minus)  # for the highest level
  cdf_delta = jax.nn.sigmoid(plus) - jax.nn.sigmoid(minus)
  mid = inv_s * c
  log_pdf_mid = mid - log_s - 2. * jax.nn.softplus(mid) + jnp.log(2. * half)
  # Where the bin mass underflows, use the density at the centre times the bin width.
  inner = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)), log_pdf_mid)
  logp = jnp.where(x[..., None] < -1. + half, log_cdf_plus,
                   jnp.where(x[..., None] > 1. - half, log_one_minus_cdf_minus, inner))
  return -jax.nn.logsumexp(logp + jax.nn.log_softmax(logit_w), axis=-1)


def sample_output(model: Model, rng: jax.Array, out: jax.Array, temperature) -> jax.Array:
  """One code per row of `out` [B, Q or 3M]; temperature scales the logits / logistic scales."""
  return sample_from_draws(model, draws(model, rng, out.shape[:-1]), out, temperature)


def draws(model: Model, rng: jax.Array, shape: tuple[int, ...]):
  """The random numbers of `sample_output` for outputs of batch shape `shape`: a uniform per
  draw (softmax, by the inverse CDF), a normal (Gaussian), or Gumbel noise per component plus a
  uniform (mixture). Kept apart so that the cached sampler can draw many steps' worth at once:
  drawing them one step at a time dominated its cost."""
  if model.output == 'softmax':
    return jax.random.uniform(rng, shape)
  if model.output == 'gaussian':
    return jax.random.normal(rng, shape)
  r1, r2 = jax.random.split(rng)
  return (jax.random.gumbel(r1, (*shape, model.num_mixtures)),
          jax.random.uniform(r2, shape, minval=1e-5, maxval=1. - 1e-5))


def sample_from_draws(model: Model, noise, out: jax.Array, temperature) -> jax.Array:
  """`sample_output` given its `draws`."""
  if model.output == 'softmax':
    return sampling.inverse_cdf(out, noise, temperature)
  temperature = jnp.maximum(jnp.asarray(temperature, jnp.float32), 1e-6)
  if model.output == 'gaussian':
    mu, log_s = gaussian_params(out)
    x = jnp.clip(mu + jnp.exp(log_s) * temperature * noise, -1., 1.)
    return jnp.round((x + 1.) * ((model.num_classes - 1) / 2.)).astype(jnp.int32)
  g, u = noise
  logit_w, mu, log_s = mixture_params(model, out)
  k = sampling.argmax(logit_w / temperature + g)[..., None]
  mu = jnp.take_along_axis(mu, k, -1)[..., 0]
  s = jnp.exp(jnp.take_along_axis(log_s, k, -1)[..., 0]) * temperature
  x = jnp.clip(mu + s * (jnp.log(u) - jnp.log1p(-u)), -1., 1.)
  return jnp.round((x + 1.) * ((model.num_classes - 1) / 2.)).astype(jnp.int32)
