"""Blow (Serrà, Pascual & Segura 2019): a single-scale hyperconditioned flow that translates
frames of audio between domains (here the instruments of data.specs.INSTRUMENTS).

    frame x [B, F] --num_blocks x [squeeze by 2
                                   --flows_per_block x (invertible 1x1 conv -> ActNorm
                                                        -> hyperconditioned affine coupling)]
      --> z [B, F]

Single-scale: nothing is factored out, so every flow sees the whole frame (block b's flows
transform 2^(b+1) channels of F / 2^(b+1) steps). The domain enters every coupling through a
learned embedding of `embedding_dim` per instrument (one table, shared by the couplings): the
coupling's adapter, a linear map of the embedding, generates the weights and the bias of its
network's first convolution (width `kernel_size`, the "hyperconvolution"; as in the published
code a grouped one: output channel r reads input channel r // (channels / half)), then ReLU, a
1x1 convolution of `channels`, ReLU, and a zero-initialised convolution of width
`kernel_size` to the scale and the shift of the other half:

    z_b = s (x_b + m),   s = sigmoid(h + 2) + 1e-7,   log_det = sum log s

(the published code's form; s starts at sigmoid(2) = 0.88, not at the identity). The 1x1
convolutions are LU-parameterised (Glow's option, `lu`), ActNorm starts from the first
training batch (models/layers/flows.py; its statistics, the 'actnorm' collection, are the
model state). The order inside a flow, mixing before ActNorm, is the published code's.

Likelihood. A standard Gaussian prior on z; the loss cuts the crop [B, T] into frames of
`frame_samples` (T a multiple of it; a crop shorter than a frame, a multiple of 2^num_blocks,
is one frame of its own length: the flow is convolutional), dequantises each sample with
u ~ U[0, 1) / 32768 and, with `flip`, negates each frame with probability 1/2 (the polarity
half of the paper's augmentation; its random gain and pre-emphasis are left out: the
likelihood evaluator calls the same loss, and a gain would change what its bits measure).
'nll' is in nats and 'bits_per_sample' in bits per 16-bit sample under uniform dequantisation,
the convention of models/layers/flow_vocoder.py:

    nll = (|z|^2 / 2 + T log(2 pi) / 2 - log_det) / T + log(32768)

Translation (`translate`): the audio is cut into frames of `frame_samples` at a hop of half a
frame (half a frame of zeros before it, and zeros after it up to whole hops plus half a
frame), each frame goes forward under its source instrument and back under its target, and
the frames are windowed by a periodic Hann window and overlap-added. The window's halves sum
to 1 exactly, so a translation from an instrument to itself returns the input (up to float
rounding). `temperature` scales z before the inverse (1, the default, is Blow's conversion);
the conversion is deterministic and `rng` unused. Each inverted frame is made audio as the
published code does: NaN to 0, then clipped to [-1, 1] (a latent that the target's flow has
not seen can overflow its inverse, whose couplings divide by scales in (0, 1]).

Sampling (`generate`): frames of z ~ N(0, temperature^2), frame f of stream i from
`sampling.stream_key(rng, f, i)` (models/layers/flow_vocoder.latent), each inverted alone under
the stream's cond['instrument'] and clipped to [-1, 1]; the frames are concatenated (each an
independent draw of the frame density the model learned). Blow does not continue a prompt.
"""

from collections.abc import Iterator
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data import specs
from models.layers import flow_vocoder
from models.layers import flows
from models.layers import params as params_lib
from models.layers import vocoding

KEY = 'instrument'  # the batch key of the domain ids
FRAMES_PER_PASS = 16  # frames `translate` converts at once (its memory)


class HyperCoupling(nn.Module):
  """z = [x_a, s (x_b + m)] with (s, m) from x_a and the domain embedding (module docstring);
  x_a the first half of the `features` channels."""
  features: int
  channels: int = 512
  kernel_size: int = 3
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @nn.compact
  def _params(self, embedding_dim: int) -> dict:
    r, k, half = self.channels, self.kernel_size, self.features // 2
    dense = lambda name, *a, **kw: params_lib.dense(self, name, *a, **kw)
    zeros = nn.initializers.zeros
    return {
        # The adapter: embedding -> the hyperconvolution's taps [K, R] and bias [R] (scaled
        # so that the generated taps of a unit embedding have variance 1 / K).
        'adapt_w': dense('adapt_w', embedding_dim, (k, r), 'cond', (None, 'mlp'), 1. / k),
        'adapt_b': dense('adapt_b', embedding_dim, r, 'cond', 'mlp', 1. / k),
        'mid': dense('mid', r, r, 'mlp', 'embed', 2.),  # the 1x1 convolution (He init)
        'end': {'kernel': params_lib.param(self, 'end_kernel', (k, r, 2 * (self.features - half)),
                                           (None, 'embed', None), zeros),
                'bias': params_lib.param(self, 'end_bias', (2 * (self.features - half),),
                                         (None,), zeros)}}

  def _conv(self, h: jax.Array, tap) -> jax.Array:
    """sum_j tap(j)(h)[n + j - K//2]: a width-K convolution centred on each step (zeros past
    the frame), one shifted tap at a time (no [B, N, K, C] copy of the input)."""
    c = self.kernel_size // 2
    return sum(flows.shift(tap(j, h), c - j) for j in range(self.kernel_size))

  def _scale_shift(self, xa: jax.Array, emb: jax.Array):
    p = self._params(emb.shape[-1])
    dtype = jnp.dtype(self.dtype)
    p = params_lib.cast(p, dtype)
    emb = emb.astype(dtype)
    w = jnp.einsum('bd,dkr->bkr', emb, p['adapt_w']['kernel']) + p['adapt_w']['bias']
    b = emb @ p['adapt_b']['kernel'] + p['adapt_b']['bias']
    rep = self.channels // xa.shape[-1]  # the group of output channels each input feeds
    h = jnp.repeat(xa.astype(dtype), rep, axis=-1)  # [B, N, R]
    h = self._conv(h, lambda j, v: v * w[:, None, j]) + b[:, None]  # the hyperconvolution
    h = nn.with_logical_constraint(jax.nn.relu(h), ('batch', 'time', 'mlp'))
    h = jax.nn.relu(h @ p['mid']['kernel'] + p['mid']['bias'])
    end = p['end']['kernel'].astype(jnp.float32)
    out = self._conv(h, lambda j, v: v.astype(jnp.float32) @ end[j])  # taps after the matmul
    out = out + p['end']['bias'].astype(jnp.float32)
    nb = self.features - self.features // 2
    s = jax.nn.sigmoid(out[..., :nb] + 2.) + 1e-7
    return s, out[..., nb:]

  def forward(self, x: jax.Array, emb: jax.Array):
    half = self.features // 2
    s, m = self._scale_shift(x[..., :half], emb)
    z = jnp.concatenate([x[..., :half], s * (x[..., half:] + m)], axis=-1)
    return z, jnp.sum(jnp.log(s), axis=(1, 2))

  def inverse(self, z: jax.Array, emb: jax.Array) -> jax.Array:
    half = self.features // 2
    s, m = self._scale_shift(z[..., :half], emb)
    return jnp.concatenate([z[..., :half], z[..., half:] / s - m], axis=-1)


class Model(nn.Module):
  """Blow; `Model(**config.model)`."""
  num_domains: int = len(specs.INSTRUMENTS)
  frame_samples: int = 4096
  num_blocks: int = 8
  flows_per_block: int = 12
  channels: int = 512
  embedding_dim: int = 128
  kernel_size: int = 3
  lu: bool = True  # LU-parameterised 1x1 convolutions (the published code's)
  flip: bool = True  # the loss negates each frame with probability 1/2
  sample_rate: int = 16000  # derived from config.input
  encoding: str = 'float'  # config.input.encoding (derived): a density on float audio
  dtype: str = 'float32'  # the couplings' activations
  param_dtype: str = 'float32'

  conditions = (KEY,)

  def __post_init__(self):
    name = 'blow'
    if self.encoding != 'float':
      raise ValueError(f"model.encoding={self.encoding!r} (from config.input.encoding): {name} "
                       "is a density on float audio; expected 'float'")
    g = 2 ** self.num_blocks
    if self.num_blocks < 1:
      raise ValueError(f'model.num_blocks={self.num_blocks}: expected at least 1')
    if self.frame_samples <= 0 or self.frame_samples % g:
      raise ValueError(f'model.frame_samples={self.frame_samples}: expected a multiple of '
                       f'2^num_blocks = {g}')
    if self.channels % (g // 2):
      raise ValueError(f'model.channels={self.channels}: expected a multiple of {g // 2}, the '
                       'widest coupling\'s half (its hyperconvolution is grouped by it)')
    if self.kernel_size % 2 == 0:
      raise ValueError(f'model.kernel_size={self.kernel_size}: expected an odd width')
    if self.num_domains < 1:
      raise ValueError(f'model.num_domains={self.num_domains}: expected at least 1')
    super().__post_init__()

  @property
  def granularity(self) -> int:
    """T of forward / inverse must be a multiple: the product of the squeezes."""
    return 2 ** self.num_blocks

  @property
  def widths(self) -> tuple[int, ...]:
    """The channels of each block's flows."""
    return tuple(2 ** (b + 1) for b in range(self.num_blocks))

  def frame_length(self, t: int) -> int:
    """The frames a crop of t samples is cut into for the loss (module docstring)."""
    if t % self.frame_samples == 0:
      return self.frame_samples
    if t < self.frame_samples and t % self.granularity == 0:
      return t
    raise ValueError(f'{t} samples: a multiple of the frame, {self.frame_samples}, expected (or '
                     f'a shorter multiple of {self.granularity}); set input.crop_samples to one')

  def setup(self):
    self.embedding = params_lib.param(self, 'embedding', (self.num_domains, self.embedding_dim),
                                      ('vocab', 'cond'), nn.initializers.normal(1.))
    n = self.flows_per_block
    self.convs = [[flows.InvertibleConv1x1(c, self.lu, seed=b * n + f,
                                           param_dtype=self.param_dtype) for f in range(n)]
                  for b, c in enumerate(self.widths)]
    self.norms = [[flows.ActNorm(c, self.param_dtype) for _ in range(n)] for c in self.widths]
    self.couplings = [[HyperCoupling(c, self.channels, self.kernel_size, self.dtype,
                                     self.param_dtype) for _ in range(n)] for c in self.widths]

  def _check(self, t: int) -> None:
    if t % self.granularity:
      raise ValueError(f'{t} samples: a multiple of {self.granularity} expected (2^num_blocks, '
                       'the squeezes of the flow)')

  def _embed(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding.astype(jnp.float32), ids.astype(jnp.int32), axis=0)

  def forward(self, x: jax.Array, ids: jax.Array):
    """x [B, T] float audio (one sequence), ids [B] domains -> (z [B, T], log_det [B])."""
    t = x.shape[1]
    self._check(t)
    emb, h = self._embed(ids), x[..., None].astype(jnp.float32)
    log_det = jnp.zeros(x.shape[:1])
    for b in range(self.num_blocks):
      h = flows.squeeze(h, 2)
      for f in range(self.flows_per_block):
        h, ld_conv = self.convs[b][f].forward(h)
        h, ld_norm = self.norms[b][f].forward(h)
        h, ld_coupling = self.couplings[b][f].forward(h, emb)
        log_det = log_det + ld_conv + ld_norm + ld_coupling
    return h.reshape(x.shape), log_det

  def inverse(self, z: jax.Array, ids: jax.Array) -> jax.Array:
    """z [B, T], ids [B] -> x [B, T]."""
    t = z.shape[1]
    self._check(t)
    emb = self._embed(ids)
    h = z.astype(jnp.float32).reshape(z.shape[0], t // self.granularity, self.granularity)
    for b in reversed(range(self.num_blocks)):
      for f in reversed(range(self.flows_per_block)):
        h = self.couplings[b][f].inverse(h, emb)
        h = self.norms[b][f].inverse(h)
        h = self.convs[b][f].inverse(h)
      h = flows.unsqueeze(h, 2)
    return h[..., 0]


def _ids(model: Model, cond: dict | None, rows: int | None = None, name: str = KEY):
  """cond[KEY] as int32 [B], with the contract's one-line errors (host values checked)."""
  if not cond or KEY not in cond:
    raise ValueError(f"blow is conditioned on ids {KEY!r}; the batch has no {KEY!r} (set "
                     'config.input.instruments=True)')
  ids = cond[KEY]
  if rows is not None and np.shape(ids) != (rows,):
    raise ValueError(f'{name} has shape {np.shape(ids)}; expected ({rows},), one id per row')
  try:
    host = np.asarray(ids)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    host = None  # traced (inside jit): checked where the ids come from the host
  if host is not None and host.size:
    if host.min() < 0 or host.max() >= model.num_domains:
      raise ValueError(f'{name}={host.tolist()}: expected ids in [0, {model.num_domains}) '
                       f'(data.specs.INSTRUMENTS)')
  return jnp.asarray(ids).astype(jnp.int32)


def init(model: Model, rng: jax.Array, batch: dict) -> dict:
  """The variables of `model` from `rng` (ActNorm's statistics unset), traced on one frame of
  `batch`'s crop."""
  f = model.frame_length(np.shape(batch['audio'])[1])
  ids = _ids(model, batch)[:1]
  return model.init(rng, jnp.zeros((1, f), jnp.float32), ids, method='forward')


def loss(model: Model, variables: dict, batch: dict, rng) -> tuple:
  """(mean NLL in nats per 16-bit sample, metrics, model state): see the module docstring.

  metrics: 'nll' (= loss), 'bits_per_sample', 'log_det' (nats per sample), 'prior' (|z|^2 / 2T
  + log(2 pi) / 2, nats per sample) and 'weight', the samples averaged over.
  """
  x = flow_vocoder.float_audio(batch)
  b, t = x.shape
  f = model.frame_length(t)
  ids = jnp.repeat(_ids(model, batch, b, f"batch[{KEY!r}]"), t // f)
  frames = x.reshape(b * (t // f), f).astype(jnp.float32)
  if rng is None:  # deterministic: mid-bin, no flips
    frames = frames + 0.5 / 32768.
  else:
    k_flip, k_deq = jax.random.split(rng)
    if model.flip:  # the polarity flip, then each flipped sample dequantised in its own bin
      sign = jnp.where(jax.random.bernoulli(k_flip, 0.5, frames.shape[:1]), -1., 1.)
      frames = frames * sign[:, None]
    frames = frames + jax.random.uniform(k_deq, frames.shape) / 32768.
  mutable = [k for k in variables if k != 'params']
  out = model.apply(variables, frames, ids, method='forward', mutable=mutable or False)
  (z, log_det), state = out if mutable else (out, {})
  sq = jnp.sum(jnp.square(z), axis=1).reshape(b, -1).sum(axis=1)  # [B]
  nll, metrics = flow_vocoder.density(sq, log_det.reshape(b, -1).sum(axis=1), t, batch)
  return nll, metrics, dict(state)


def forward(model: Model, variables: dict, x: jax.Array, cond: dict):
  """The flow's `forward` on float audio [B, T] (one sequence, T a multiple of
  2^num_blocks) under cond['instrument'] [B]: (z [B, T], log_det [B])."""
  return model.apply(variables, x, _ids(model, cond, x.shape[0]), method='forward')


def inverse(model: Model, variables: dict, z: jax.Array, cond: dict) -> jax.Array:
  """The flow's `inverse`: latents [B, T] under cond['instrument'] [B] -> audio [B, T] (not
  clipped)."""
  return model.apply(variables, z, _ids(model, cond, z.shape[0]), method='inverse')


def _audio(x: jax.Array) -> jax.Array:
  """The inverse's output as audio, as the published code's: NaN -> 0, then clipped to
  [-1, 1] (infinities to the bounds). A latent the target instrument's flow has not seen can
  make its inverse overflow: each coupling's inverse divides by a scale in (0, 1]."""
  return jnp.clip(jnp.nan_to_num(x, nan=0., posinf=1., neginf=-1.), -1., 1.)


def hann(n: int) -> np.ndarray:
  """The periodic Hann window of n samples: w[j] + w[j + n/2] = 1."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _convert(model: Model, variables: dict, frames: jax.Array, source: jax.Array,
             target: jax.Array, temperature) -> jax.Array:
  """Frames [N, F] forward under `source` [N] and back under `target` [N], z scaled by
  `temperature`, FRAMES_PER_PASS frames at a time."""
  def one(args):
    x, s, t = args
    z, _ = model.apply(variables, x[None], s[None], method='forward')
    return model.apply(variables, z * temperature, t[None], method='inverse')[0]
  return _audio(jax.lax.map(one, (frames, source, target),
                            batch_size=min(FRAMES_PER_PASS, frames.shape[0])))


def translate(model: Model, variables: dict, rng, audio, source, target,
              temperature: float = 1.0) -> np.ndarray:
  """The contract's `translate`: audio [B, T] float in [-1, 1] of instruments `source` [B],
  played by `target` [B] -> float32 [B, T] in [-1, 1] (module docstring: frames at a hop of
  half a frame, Hann-windowed overlap-add; `rng` unused, `temperature` scales z)."""
  del rng
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 2:
    raise ValueError(f'audio has shape {audio.shape}; expected [B, T]')
  b, t = audio.shape
  source = _ids(model, {KEY: source}, b, 'source')
  target = _ids(model, {KEY: target}, b, 'target')
  f = model.frame_samples
  hop = f // 2
  hops = -(-t // hop) + 2  # half a frame of zeros before, whole hops and half a frame after
  padded = np.zeros((b, hops * hop), np.float32)
  padded[:, hop:hop + t] = audio
  k = hops - 1  # frames starting at 0, hop, 2 hop, ...
  idx = np.arange(k)[:, None] * hop + np.arange(f)[None]  # [K, F]
  frames = padded[:, idx].reshape(b * k, f)
  y = _convert(model, variables, jnp.asarray(frames), jnp.repeat(source, k),
               jnp.repeat(target, k), jnp.float32(temperature))
  y = np.asarray(y).reshape(b, k, f) * hann(f)
  out = np.zeros((b, hops * hop), np.float32)
  halves = y.reshape(b, k, 2, hop)
  out[:, :k * hop] += halves[:, :, 0].reshape(b, k * hop)  # first halves: at frame starts
  out[:, hop:] += halves[:, :, 1].reshape(b, k * hop)  # second halves: a hop later
  return np.clip(out[:, hop:hop + t], -1., 1.)  # (overlapping frames at 1 may add past it)


@functools.partial(jax.jit, static_argnums=0)
def _invert(model: Model, variables: dict, z: jax.Array, ids: jax.Array) -> jax.Array:
  """The inverse of each frame [N, F] alone (lax.map), clipped to [-1, 1]: a stream's audio is
  then bit-identical however many streams are drawn beside it."""
  one = lambda zi: model.apply(variables, zi[0][None], zi[1][None], method='inverse')[0]
  return _audio(jax.lax.map(one, (z, ids)))


def generate(model: Model, variables: dict, rng: jax.Array, num_samples: int, *,
             batch: int = 1, prompt=None, cond: dict | None = None, temperature: float = 1.0,
             chunk_samples: int = 16000, first_stream: int = 0) -> Iterator[np.ndarray]:
  """The contract's `generate`: float audio chunks [B, <= chunk_samples] of frames drawn from
  the prior and inverted under cond['instrument'] [B] (module docstring)."""
  if prompt is not None:
    raise ValueError('blow draws frames from its prior: it does not continue a prompt')
  if num_samples < 0:
    raise ValueError(f'num_samples={num_samples}: expected >= 0')
  ids = _ids(model, cond, batch, f"cond[{KEY!r}]")
  f, streams = model.frame_samples, jnp.arange(first_stream, first_stream + batch)

  def render(lo, hi):
    n = hi - lo
    z = flow_vocoder.latent(rng, lo, n, f, streams, jnp.float32(temperature))
    x = _invert(model, variables, z.reshape(batch * n, f), jnp.repeat(ids, n))
    return np.asarray(x).reshape(batch, n * f)
  yield from vocoding.in_windows(render, -(-num_samples // f), f, batch, num_samples,
                                 chunk_samples, 0)
