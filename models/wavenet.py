"""WaveNet (van den Oord et al. 2016) with a cached autoregressive sampler.

    codes [B, T] --causal input conv (kernel k over one-hot codes, or over the scaled value)-->
    x [B, T, R] --L x (dilated causal conv -> tanh * sigmoid -> residual 1x1, skip 1x1)-->
    relu(sum of skips) -> 1x1 -> relu -> 1x1 -> logits [B, T, Q] (softmax) or [B, T, 3M] (mixture)

Position t of the output sees codes[:, :t + 1] and predicts codes[:, t + 1]: the loss compares
`logits[:, :-1]` with `codes[:, 1:]`. Before the first sample every layer sees zeros (causal
zero padding), which is also the sampler's initial state. Dilations run 1, 2, ..., 2^(c-1) for
c = `dilation_cycle`, repeated; the receptive field is `Model.receptive_field` samples.

Outputs: 'softmax' over `num_classes` codes (8-bit mu-law in the paper), or 'mixture', a
discretised mixture of `num_mixtures` logistics over `num_classes` levels evenly spaced in
[-1, 1] (PixelCNN++, Parallel WaveNet), whose input is the scaled code value.

Conditioning, added to every layer's gate pre-activation:
  * global: `num_global` ids ([B] int32, e.g. composer or instrument) through an embedding;
  * local: frame features [B, F, D] (MIDI pianoroll/onsets/velocities, or mel frames) through a
    width-3 convolution over frames, held for `hop_length` samples. The output at t (which
    predicts sample t + 1) uses frame (t + 1) // hop_length, the frame of its target, clamped to
    the last frame.

The sampler (`init_cache`, `step`, `generate`) keeps for each layer a ring buffer of its last
(k - 1) x dilation inputs (Fast WaveNet, Paine et al. 2016), so a step costs one column of the
network rather than the receptive field; `naive_step` recomputes the receptive field and serves
as the reference for benchmarks. Both are pure functions of the (unboxed) parameter dict.
"""

from collections.abc import Iterator
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

OUTPUTS = ('softmax', 'mixture')


def _shift(x: jax.Array, s: int) -> jax.Array:
  """x delayed by s steps along axis 1, zeros in front."""
  if s == 0:
    return x
  if s >= x.shape[1]:
    return jnp.zeros_like(x)
  pad = [(0, 0)] * x.ndim
  pad[1] = (s, 0)
  return jnp.pad(x[:, :x.shape[1] - s], pad)


def _gate(y: jax.Array) -> jax.Array:
  """[..., 2, H] -> [..., H]: tanh(filter) * sigmoid(gate)."""
  return jnp.tanh(y[..., 0, :]) * jax.nn.sigmoid(y[..., 1, :])


def _head(p: dict, skips: jax.Array) -> jax.Array:
  h = jax.nn.relu(skips)
  h = jax.nn.relu(h @ p['head_hidden']['kernel'] + p['head_hidden']['bias'])
  return h @ p['head_out']['kernel'] + p['head_out']['bias']


class Model(nn.Module):
  """WaveNet; `Model(**config.model)`. Logical axes: batch, time, embed (residual), mlp (gate),
  skip, vocab (outputs), cond (conditioning channels)."""
  num_classes: int = 256
  residual_channels: int = 64
  gate_channels: int = 128  # outputs of the dilated conv: half tanh filter, half sigmoid gate
  skip_channels: int = 64
  kernel_size: int = 2
  num_layers: int = 30
  dilation_cycle: int = 10
  output: str = 'softmax'
  num_mixtures: int = 10
  num_global: int = 0  # global conditioning ids; 0: none
  global_channels: int = 16
  local_features: int = 0  # D of the frame features; 0: no local conditioning
  local_channels: int = 64
  hop_length: int = 0  # samples per conditioning frame
  dtype: str = 'float32'  # activations
  param_dtype: str = 'float32'

  def __post_init__(self):
    if self.output not in OUTPUTS:
      raise ValueError(f'model.output={self.output!r}: expected one of {", ".join(OUTPUTS)}')
    if self.gate_channels % 2:
      raise ValueError(f'model.gate_channels={self.gate_channels}: expected an even number')
    if self.local_features and self.hop_length <= 0:
      raise ValueError(f'model.hop_length={self.hop_length}: local conditioning needs the '
                       'samples per frame')
    super().__post_init__()

  @property
  def dilations(self) -> tuple[int, ...]:
    return tuple(2 ** (i % self.dilation_cycle) for i in range(self.num_layers))

  @property
  def receptive_field(self) -> int:
    """Samples of input that the output at one position depends on (itself included)."""
    return (self.kernel_size - 1) * (sum(self.dilations) + 1) + 1

  @property
  def out_features(self) -> int:
    return self.num_classes if self.output == 'softmax' else 3 * self.num_mixtures

  def _p(self, name, shape, axes, init=None):
    init = init or nn.initializers.lecun_normal()
    return self.param(name, nn.with_logical_partitioning(init, axes), shape,
                      jnp.dtype(self.param_dtype))

  def _dense(self, name, d_in, d_out, axes_in, axes_out, zero=False):
    """{'kernel': [d_in.., d_out..], 'bias': [d_out..]} in a named scope (pure-dict friendly)."""
    d_out = d_out if isinstance(d_out, tuple) else (d_out,)
    axes_out = axes_out if isinstance(axes_out, tuple) else (axes_out,)
    init = nn.initializers.zeros if zero else nn.initializers.variance_scaling(
        1.0, 'fan_in', 'truncated_normal', in_axis=0, out_axis=tuple(range(1, 1 + len(d_out))))
    return {
        'kernel': self._p(f'{name}_kernel', (d_in,) + d_out, (axes_in,) + axes_out, init),
        'bias': self._p(f'{name}_bias', d_out, axes_out, nn.initializers.zeros),
    }

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
    p = self._params()
    dtype = jnp.dtype(self.dtype)
    t = codes.shape[1]
    x = stem(self, p, codes).astype(dtype)  # [B, T, R]
    x = nn.with_logical_constraint(x, ('batch', 'time', 'embed'))
    lc = condition(self, p, local) if self.local_features else None  # [B, F, C]
    gc = p['global_embed'][global_ids] if self.num_global else None  # [B, G]
    if self.local_features:
      frame = jnp.minimum((jnp.arange(t) + 1) // self.hop_length, lc.shape[1] - 1)  # [T]
    skips = 0.
    for i, d in enumerate(self.dilations):
      lp = p[f'layer{i}']
      taps = jnp.concatenate([_shift(x, (self.kernel_size - 1 - j) * d)
                              for j in range(self.kernel_size)], axis=-1)  # [B, T, kR]
      y = jnp.einsum('btc,cgh->btgh', taps, lp['conv']['kernel'].astype(dtype))
      y = y + lp['conv']['bias']  # [B, T, 2, H]
      if self.num_global:
        y = y + (gc @ lp['global']['kernel'].reshape(gc.shape[-1], -1)).reshape(
            -1, 1, *y.shape[2:]) + lp['global']['bias']
      if self.local_features:
        # Project at the frame rate, then hold each frame for hop samples.
        f = jnp.einsum('bfc,cgh->bfgh', lc, lp['local']['kernel']) + lp['local']['bias']
        y = y + f[:, frame]
      z = nn.with_logical_constraint(_gate(y), ('batch', 'time', 'mlp'))  # [B, T, H]
      skips = skips + z @ lp['skip']['kernel'].astype(dtype) + lp['skip']['bias']
      if 'res' in lp:
        x = x + z @ lp['res']['kernel'].astype(dtype) + lp['res']['bias']
        x = nn.with_logical_constraint(x, ('batch', 'time', 'embed'))
    out = _head(p, skips)
    return nn.with_logical_constraint(out.astype(jnp.float32), ('batch', 'time', 'vocab'))


def stem(model: Model, p: dict, codes: jax.Array) -> jax.Array:
  """The causal input convolution: codes [B, T] -> [B, T, R]."""
  w = p['stem']['kernel']  # [k, D, R]
  k = model.kernel_size
  if model.output == 'softmax':
    return sum(_shift(w[j][codes], k - 1 - j) for j in range(k)) + p['stem']['bias']
  v = value(model, codes)[..., None]  # [B, T, 1]
  return sum(_shift(v * w[j, 0], k - 1 - j) for j in range(k)) + p['stem']['bias']


def value(model: Model, codes: jax.Array) -> jax.Array:
  """Codes 0..Q-1 -> levels evenly spaced in [-1, 1] (the mixture output's input and target)."""
  return codes.astype(jnp.float32) * (2. / (model.num_classes - 1)) - 1.


def condition(model: Model, p: dict, local: jax.Array) -> jax.Array:
  """Frame features [B, F, D] -> conditioning [B, F, C] (a width-3 conv over frames, tanh)."""
  if local.shape[-1] != model.local_features:
    raise ValueError(f'local conditioning has {local.shape[-1]} features per frame; '
                     f'model.local_features={model.local_features}')
  x = local.astype(jnp.float32)
  taps = jnp.concatenate([jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1], x,
                          jnp.pad(x, ((0, 0), (0, 1), (0, 0)))[:, 1:]], axis=-1)
  return jnp.tanh(taps @ p['local_conv']['kernel'] + p['local_conv']['bias'])


def unboxed_params(model: Model, variables: dict) -> dict:
  """The nested parameter dict of `variables` ({'params': ...} from init or a checkpoint)."""
  return model.apply(variables, method=lambda m: m._params())  # pylint: disable=protected-access


# ------------------------------------------------------------------------------------------------
# Losses and sampling from the output distribution.


def nll(model: Model, out: jax.Array, targets: jax.Array) -> jax.Array:
  """Negative log-likelihood in nats of `targets` [B, T] codes under `out` [B, T, Q or 3M]."""
  if model.output == 'softmax':
    logp = jax.nn.log_softmax(out.astype(jnp.float32))
    return -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
  return _mixture_nll(model, out, value(model, targets))


def _mixture_params(model: Model, out: jax.Array):
  m = model.num_mixtures
  logit_w, mu, log_s = out[..., :m], out[..., m:2 * m], out[..., 2 * m:]
  return logit_w, mu, jnp.maximum(log_s, -7.)


def _mixture_nll(model: Model, out: jax.Array, x: jax.Array) -> jax.Array:
  """Discretised logistic mixture (Salimans et al. 2017) over levels with spacing 2/(Q-1)."""
  logit_w, mu, log_s = _mixture_params(model, out.astype(jnp.float32))
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
  temperature = jnp.maximum(jnp.asarray(temperature, jnp.float32), 1e-6)
  if model.output == 'softmax':
    return jax.random.categorical(rng, out / temperature, axis=-1).astype(jnp.int32)
  logit_w, mu, log_s = _mixture_params(model, out)
  r1, r2 = jax.random.split(rng)
  k = jax.random.categorical(r1, logit_w / temperature, axis=-1)[..., None]
  mu = jnp.take_along_axis(mu, k, -1)[..., 0]
  s = jnp.exp(jnp.take_along_axis(log_s, k, -1)[..., 0]) * temperature
  u = jax.random.uniform(r2, mu.shape, minval=1e-5, maxval=1. - 1e-5)
  x = jnp.clip(mu + s * (jnp.log(u) - jnp.log1p(-u)), -1., 1.)
  return jnp.round((x + 1.) * ((model.num_classes - 1) / 2.)).astype(jnp.int32)


# ------------------------------------------------------------------------------------------------
# The cached sampler.
#
# Layers that share a dilation share one ring buffer, time first: [(k - 1) d, G, B, R] for the G
# layers of dilation d. A step reads every past tap before it writes anything, so that XLA can
# update the buffers in place (reads interleaved with writes made it copy every buffer, twice, at
# every step), and each tap is one contiguous [G, B, R] row.


def _groups(model: Model) -> tuple[tuple[int, tuple[int, ...]], ...]:
  """(dilation, its layers) for each distinct dilation, in order of first use."""
  if model.kernel_size == 1:  # no past taps, nothing to remember
    return ()
  out = {}
  for i, d in enumerate(model.dilations):
    out.setdefault(d, []).append(i)
  return tuple((d, tuple(ix)) for d, ix in out.items())


def init_cache(model: Model, batch: int) -> dict:
  """The sampler's state before the first sample: zero queues (the causal zero padding)."""
  k, r = model.kernel_size, model.residual_channels
  return {
      't': jnp.zeros((), jnp.int32),  # the position of the next input
      'stem': jnp.full((batch, k - 1), -1, jnp.int32),  # past input codes; -1 before the start
      'bufs': [jnp.zeros(((k - 1) * d, len(ix), batch, r), jnp.dtype(model.dtype))
               for d, ix in _groups(model)],  # [(k-1) d, G, B, R] layer inputs, ring by time
  }


def layer_conditioning(model: Model, p: dict, cond: jax.Array, name: str) -> jax.Array:
  """Per-layer gate offsets of a conditioning vector: [..., C] -> [..., L, 2, H]."""
  return jnp.stack([jnp.einsum('...c,cgh->...gh', cond, p[f'layer{i}'][name]['kernel']) +
                    p[f'layer{i}'][name]['bias'] for i in range(model.num_layers)], axis=-3)


def sampler_weights(model: Model, p: dict, gproj: jax.Array | None = None) -> dict:
  """The parameters rearranged once for `step`: per layer the current tap's kernel [R, 2H], the
  residual and skip kernels side by side [H, R + S] (one matmul), and per dilation group the past
  taps' kernels [k - 1, G, R, 2H]. `gproj` [B, L, 2, H] (constant in time) joins the biases."""
  k, r, h2 = model.kernel_size, model.residual_channels, model.gate_channels
  dtype = jnp.dtype(model.dtype)
  conv = [p[f'layer{i}']['conv']['kernel'].reshape(k, r, h2).astype(dtype)
          for i in range(model.num_layers)]  # [k, R, 2H]; tap j sees x[t - (k - 1 - j) d]
  layers = []
  for i in range(model.num_layers):
    lp = p[f'layer{i}']
    bias = lp['conv']['bias'].reshape(h2)
    if gproj is not None:
      bias = bias + gproj[:, i].reshape(-1, h2)  # [B, 2H]
    names = ('res', 'skip') if 'res' in lp else ('skip',)
    layers.append({
        'cur': conv[i][k - 1], 'bias': bias,
        'out': jnp.concatenate([lp[n]['kernel'] for n in names], 1).astype(dtype),
        'out_bias': jnp.concatenate([lp[n]['bias'] for n in names])})
  w = {'stem': p['stem'], 'layers': layers, 'head_hidden': p['head_hidden'],
       'head_out': p['head_out'],
       'past': [jnp.stack([conv[i][:k - 1] for i in ix], 1) for _, ix in _groups(model)]}
  if model.local_features:
    w['local'] = {n: jnp.stack([p[f'layer{i}']['local'][n].reshape(-1, h2)
                                for i in range(model.num_layers)], -2)
                  for n in ('kernel', 'bias')}  # [C, L, 2H], [L, 2H]
  return w


def _step(model: Model, w: dict, cache: dict, codes: jax.Array,
          cond: jax.Array | None) -> tuple[jax.Array, dict]:
  """`step` on the weights of `sampler_weights`."""
  k, t, dtype = model.kernel_size, cache['t'], jnp.dtype(model.dtype)
  r, h, b = model.residual_channels, model.gate_channels // 2, codes.shape[0]
  codes = codes.astype(jnp.int32)
  past = jnp.concatenate([cache['stem'], codes[:, None]], axis=1)  # [B, k]
  ws = w['stem']['kernel']  # [k, D, R]
  if model.output == 'softmax':
    emb = [jnp.where(past[:, j, None] >= 0, ws[j][jnp.maximum(past[:, j], 0)], 0.)
           for j in range(k)]
  else:
    v = jnp.where(past >= 0, value(model, past), 0.)  # [B, k]
    emb = [v[:, j, None] * ws[j, 0] for j in range(k)]
  x = (sum(emb) + w['stem']['bias']).astype(dtype)  # [B, R]
  groups = _groups(model)
  pre = [0.] * model.num_layers  # the past taps through each layer's kernel, [B, 2H]
  for (d, ix), buf, wp in zip(groups, cache['bufs'], w['past']):
    taps = jnp.stack([jax.lax.dynamic_index_in_dim(buf, (t - m * d) % buf.shape[0], 0, False)
                      for m in range(k - 1, 0, -1)])  # [k - 1, G, B, R]
    y = jnp.einsum('jgbr,jgrh->gbh', taps, wp)  # [G, B, 2H]
    for s, i in enumerate(ix):
      pre[i] = y[s]
  if cond is not None:
    cond = cond.reshape(b, model.num_layers, 2 * h)
  inputs, skips = [], 0.
  for i, lw in enumerate(w['layers']):
    inputs.append(x)
    y = x @ lw['cur'] + pre[i] + lw['bias']  # [B, 2H]
    if cond is not None:
      y = y + cond[:, i]
    z = _gate(y.reshape(b, 2, h))  # [B, H]
    o = z @ lw['out'] + lw['out_bias']  # [B, R + S], or [B, S] for the last layer
    if o.shape[-1] > model.skip_channels:
      x, o = x + o[:, :r], o[:, r:]
    skips = skips + o
  bufs = [jax.lax.dynamic_update_index_in_dim(buf, jnp.stack([inputs[i] for i in ix]),
                                              t % buf.shape[0], 0)
          for (d, ix), buf in zip(groups, cache['bufs'])]
  cache = {'t': t + 1, 'stem': past[:, 1:], 'bufs': bufs}
  return _head(w, skips).astype(jnp.float32), cache


def step(model: Model, p: dict, cache: dict, codes: jax.Array,
         cond: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """One sample: the input codes [B] at position cache['t'] -> (output [B, Q or 3M], cache).

  `p` is the nested parameter dict (`unboxed_params`). `cond` [B, L, 2, H] is the sum of the
  layers' global and local gate offsets at this position (see `layer_conditioning`), or None for
  an unconditional model.
  """
  return _step(model, sampler_weights(model, p), cache, codes, cond)


@functools.partial(jax.jit, static_argnums=(0, 6), donate_argnums=(2,))
def _run(model: Model, w: dict, cache: dict, x: jax.Array, rng: jax.Array,
         temperature: jax.Array, n: int, forced: jax.Array | None, local: jax.Array | None):
  """n steps from input codes x [B]; `forced` [B, n] replaces the sampled codes (a prompt)."""
  t0 = cache['t']
  if local is not None:  # this chunk's frames, projected once per layer
    hop, last = model.hop_length, local.shape[1] - 1
    nf = n // hop + 2
    f0 = jnp.minimum((t0 + 1) // hop, last)
    padded = jnp.concatenate([local, jnp.repeat(local[:, -1:], nf, axis=1)], axis=1)
    frames = jax.lax.dynamic_slice_in_dim(padded, f0, nf, axis=1)  # [B, nf, C]
    lproj = jnp.einsum('bfc,clh->bflh', frames, w['local']['kernel']) + w['local']['bias']

  def body(carry, xs):
    cache, x = carry
    cond = None
    if local is not None:
      f = jnp.minimum((cache['t'] + 1) // hop, last)
      cond = jax.lax.dynamic_index_in_dim(lproj, f - f0, axis=1, keepdims=False)  # [B, L, 2H]
    out, cache = _step(model, w, cache, x, cond)
    if forced is None:
      x = sample_output(model, jax.random.fold_in(rng, cache['t']), out, temperature)
    else:
      x = xs
    return (cache, x), x

  xs = None if forced is None else forced.T
  (cache, x), codes = jax.lax.scan(body, (cache, x), xs, length=n)
  return cache, x, codes.T  # [B, n]


def generate(model: Model, variables: dict, rng: jax.Array, num_samples: int, batch: int = 1,
             prompt: np.ndarray | None = None, local: np.ndarray | None = None,
             global_ids: np.ndarray | None = None, temperature: float = 1.0,
             chunk_samples: int = 16000) -> Iterator[np.ndarray]:
  """Yields `num_samples` new codes per stream as host chunks [B, <= chunk_samples].

  Args:
    model, variables: the model and its {'params': ...}.
    rng: a PRNG key; sample t draws with fold_in(rng, t), whatever the chunking.
    num_samples: codes to generate after the prompt.
    batch: streams, when there is no prompt.
    prompt: codes [B, P] to continue; default one silent code per stream (not yielded).
    local: frame features [B, F, D] covering prompt and continuation, frame f holding samples
      [f hop, (f + 1) hop).
    global_ids: [B] int32.
    temperature: scales the logits (softmax) or the logistic scales (mixture).
    chunk_samples: steps per compiled scan; memory does not grow with num_samples.
  """
  if prompt is None:
    prompt = np.full((batch, 1), model.num_classes // 2, np.int32)
  prompt = np.asarray(prompt, np.int32)
  b = prompt.shape[0]
  p = unboxed_params(model, variables)
  gproj = None
  if model.num_global:
    if global_ids is None:
      raise ValueError('this model is globally conditioned: pass global_ids [B]')
    g = p['global_embed'][jnp.asarray(global_ids, jnp.int32)]
    gproj = layer_conditioning(model, p, g, 'global')  # [B, L, 2, H]
  lc = None
  if model.local_features:
    if local is None:
      raise ValueError('this model is locally conditioned: pass frame features [B, F, D]')
    lc = condition(model, p, jnp.asarray(local))  # [B, F, C]
  w = sampler_weights(model, p, gproj)
  cache, temperature = init_cache(model, b), jnp.float32(temperature)
  x = jnp.asarray(prompt[:, 0])
  for s in range(1, prompt.shape[1], chunk_samples):  # teacher-force the prompt
    forced = jnp.asarray(prompt[:, s:s + chunk_samples])
    cache, x, _ = _run(model, w, cache, x, rng, temperature, forced.shape[1], forced, lc)
  done = 0
  while done < num_samples:
    n = min(chunk_samples, num_samples - done)
    cache, x, codes = _run(model, w, cache, x, rng, temperature, n, None, lc)
    done += n
    yield np.asarray(codes)


@functools.partial(jax.jit, static_argnums=(0, 3))
def naive_generate(model: Model, variables: dict, rng: jax.Array, n: int,
                   window: jax.Array) -> jax.Array:
  """The reference sampler: n steps, each a full forward pass over the last receptive field.

  `window` [B, R] holds the codes before the first step; returns the new codes [B, n].
  Unconditional models only.
  """
  def body(w, t):
    out = model.apply(variables, w)[:, -1]
    x = sample_output(model, jax.random.fold_in(rng, t), out, 1.)
    return jnp.concatenate([w[:, 1:], x[:, None]], axis=1), x

  _, codes = jax.lax.scan(body, window, jnp.arange(n))
  return codes.T
