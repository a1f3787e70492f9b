"""What the mel-conditioned flow families (WaveGlow, FloWaveNet, WaveFlow) share: the Model's
data fields and checks, and the family contract's `init`, `loss` and `generate`.

A flow vocoder's Model subclasses `MelFlow` and defines

    forward(x [B, T], mel [B, F, n_mels]) -> (z [B, T], log_det [B])
    inverse(z [B, T], mel [B, F, n_mels]) -> x [B, T]

over float audio x and the batch's log-mel frames (F = ceil(T / hop)), plus `granularity`
(T must be a multiple: the product of its squeezes or its fold height) and `reach_samples`,
the samples on either side of a position that z (or x, in the inverse) at that position
depends on. The latent z is laid out in time: z[:, a:b] for a, b multiples of the granularity
is the latent of audio [a, b).

Likelihood. The flow is a density on float audio x = pcm / 32768 in [-1, 1). The training
input is dequantised, x + u / 32768 with u ~ U[0, 1) per sample (each 16-bit value spread
over its own bin), and

    nll (nats per 16-bit sample) = (|z|^2 / 2 + T log(2 pi) / 2 - log_det) / T + log(32768)

bounds the negative log-probability of the 16-bit pcm from above (Theis et al. 2016): the
density integrated over a bin of width 1/32768 is at most its mean log times the width, so
log(32768) nats (15 bits) convert the density to probability mass. 'bits_per_sample' =
nll / log(2) is in bits per 16-bit sample, comparable with a model of 16-bit linear codes.
Bits per 8-bit mu-law sample are not reported: the mass of a mu-law bin is the integral of
the joint density over a box of T bins that a flow's couplings mix, which has no tractable
form; the change-of-variables estimate (the density times the bin's width, per sample) is
neither a bound nor accurate on the wide mu-law bins of loud samples.

Sampling. z ~ N(0, temperature^2) (WaveGlow's sigma; a Model's `latent_noise` may name
another standard distribution, scaled by the temperature), drawn per frame: the hop samples of
frame f of stream i from `sampling.stream_key(rng, f, i)`, then x = inverse(z, mel) clipped
to [-1, 1]. Long inputs are inverted in windows of frames with `context_frames` of context
on either side (the flow's whole reach, so a window's output equals that of one pass over the
whole mel, up to float rounding: there are no seams), each stream on its own (so a stream's
audio does not depend on the streams drawn beside it, to the bit).
"""

from collections.abc import Iterator
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.layers import conditioning
from models.layers import sampling
from models.layers import vocoding

LOG_BIN = math.log(32768.)  # nats: the density of x = pcm / 32768 -> mass of a 16-bit bin
LOG_2PI = math.log(2 * math.pi)


class MelFlow(nn.Module):
  """The fields a flow vocoder shares; `models.create` derives the data facts."""
  sample_rate: int = 16000  # derived from config.input
  hop_length: int = 0  # samples per mel frame (derived)
  encoding: str = 'float'  # config.input.encoding (derived): flows model float audio
  local_keys: tuple[str, ...] = ('mel',)
  local_features: int = 0  # n_mels (derived)
  upsample_strides: tuple[int, ...] | None = None  # product hop_length; None: (hop_length,)
  dtype: str = 'float32'  # the coupling networks' activations
  param_dtype: str = 'float32'

  def __post_init__(self):
    vocoding.check_fields(self, 'is a density on float audio', self.strides)
    name = type(self).__module__.split('.')[-1]
    if self.hop_length % self.granularity:
      raise ValueError(f'{name}: the hop {self.hop_length} is not a multiple of the flow\'s '
                       f'granularity {self.granularity} (its squeeze or fold height)')
    super().__post_init__()

  @property
  def conditions(self) -> tuple[str, ...]:
    return tuple(self.local_keys)

  @property
  def strides(self) -> tuple[int, ...]:
    return tuple(self.upsample_strides or (self.hop_length,))

  @property
  def latent_noise(self) -> str:
    """The standard distribution of z (`latent`'s `noise`): 'normal'."""
    return 'normal'

  @property
  def granularity(self) -> int:
    raise NotImplementedError

  @property
  def reach_samples(self) -> int:
    raise NotImplementedError

  @property
  def context_frames(self) -> int:
    """Frames of context a window of the inverse needs on either side to be exact."""
    return -(-self.reach_samples // self.hop_length) + len(self.strides)

  def check_length(self, t: int) -> None:
    if t % self.granularity:
      raise ValueError(f'{t} samples: a multiple of {self.granularity} expected (the '
                       'granularity of the flow; set input.crop_samples to one)')

  def per_sample(self, mel: jax.Array, upsampler: nn.Module, t: int) -> jax.Array:
    """Log-mel frames [B, F, D] -> conditioning [B, T, D] (scaled as data.conditioning)."""
    if mel.shape[1] * self.hop_length < t:
      raise ValueError(f'{mel.shape[1]} mel frames cover {mel.shape[1] * self.hop_length} '
                       f'samples; {t} asked for')
    return upsampler(mel.astype(jnp.float32) / conditioning.DIVISOR['mel'])[:, :t]


def init(model: MelFlow, rng: jax.Array, batch: dict) -> dict:
  """The variables of `model` from `rng`, shaped by `batch` (ActNorm's statistics unset)."""
  return model.init(rng, jnp.asarray(batch['audio'], jnp.float32), _mel(model, batch),
                    method='forward')


def _mel(model: MelFlow, cond: dict) -> jax.Array:
  missing = [k for k in model.local_keys if k not in cond]
  if missing:
    raise ValueError(f'the model is conditioned on {tuple(model.local_keys)}; the batch has no '
                     f'{missing} (add them to config.input.frame_features)')
  return jnp.asarray(cond['mel'], jnp.float32)


def loss(model: MelFlow, variables: dict, batch: dict, rng) -> tuple:
  """(mean NLL in nats per 16-bit sample, metrics, model state): see the module docstring.

  metrics: 'nll' (= loss), 'bits_per_sample', 'log_det' (nats per sample), 'prior' (|z|^2 / 2T
  + log(2 pi) / 2, nats per sample) and 'weight', the samples averaged over.
  """
  x = float_audio(batch)
  t = x.shape[1]
  model.check_length(t)
  u = 0.5 if rng is None else jax.random.uniform(rng, x.shape)
  x = x + u / 32768.
  mutable = [k for k in variables if k != 'params']
  out = model.apply(variables, x, _mel(model, batch), method='forward', mutable=mutable or False)
  (z, log_det), state = out if mutable else (out, {})
  nll, metrics = density(jnp.sum(jnp.square(z), axis=1), log_det, t, batch)
  return nll, metrics, dict(state)


def float_audio(batch: dict) -> jax.Array:
  """batch['audio'], which a flow needs as floats (ValueError naming the setting otherwise)."""
  x = jnp.asarray(batch['audio'])
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"batch['audio'] is {x.dtype}: a flow needs float audio "
                     "(config.input.encoding='float')")
  return x


def density(sq: jax.Array, log_det: jax.Array, t: int, batch: dict) -> tuple:
  """(mean NLL in nats per 16-bit sample, metrics) of rows [B] of |z|^2 and log-determinants
  over `t` samples each, under a standard Gaussian prior and uniform dequantisation, averaged
  over the rows that batch['mask'] keeps: 'nll', 'bits_per_sample', 'log_det' and 'prior' in
  nats per sample, 'weight' the samples averaged over."""
  prior = 0.5 * sq / t + 0.5 * LOG_2PI  # [B]
  per_row = prior - log_det / t + LOG_BIN
  mask = jnp.asarray(batch.get('mask', jnp.ones(sq.shape[:1], bool)))
  rows = jnp.maximum(jnp.sum(mask), 1)
  mean = lambda v: jnp.sum(jnp.where(mask, v, 0.)) / rows
  nll = mean(per_row)
  return nll, {'nll': nll, 'bits_per_sample': nll / math.log(2.), 'log_det': mean(log_det / t),
               'prior': mean(prior), 'weight': jnp.sum(mask) * t}


@functools.partial(jax.jit, static_argnums=0)
def _inverse(model: MelFlow, variables: dict, z: jax.Array, mel: jax.Array) -> jax.Array:
  """The inverse of each stream alone (lax.map over rows), clipped to [-1, 1]: a stream's audio
  is then bit-identical however many streams are drawn beside it, as the contract asks (one
  batched pass rounds differently for other batch sizes)."""
  one = lambda zm: model.apply(variables, zm[0][None], zm[1][None], method='inverse')[0]
  return jnp.clip(jax.lax.map(one, (z, mel)), -1., 1.)


# The standard distributions a flow's latent may follow (a Model's `latent_noise`).
NOISES = {'normal': jax.random.normal, 'logistic': jax.random.logistic}


@functools.partial(jax.jit, static_argnums=(2, 3, 6))
def latent(rng: jax.Array, first_frame, frames: int, hop: int, streams: jax.Array,
           temperature, noise: str = 'normal') -> jax.Array:
  """z [B, frames hop] of frames first_frame.. of `streams` [B]: N(0, temperature^2) (or the
  standard `noise` 'logistic', times temperature), each frame's hop samples from its own stream
  key."""
  draw = NOISES[noise]

  def one(f, i):
    return draw(sampling.stream_key(rng, f, i), (hop,))
  f = first_frame + jnp.arange(frames)
  z = jax.vmap(lambda i: jax.vmap(lambda ff: one(ff, i))(f))(streams)  # [B, frames, hop]
  return z.reshape(streams.shape[0], frames * hop) * temperature


def generate(model: MelFlow, variables: dict, rng: jax.Array, num_samples: int, *,
             batch: int = 1, prompt=None, cond: dict | None = None, temperature: float = 1.0,
             chunk_samples: int = 16000, first_stream: int = 0) -> Iterator[np.ndarray]:
  """The contract's `generate`: float audio chunks [B, <= chunk_samples] vocoded from
  cond['mel'] [B, F, n_mels] (num_samples <= F hop), inverted window by window."""
  mel = vocoding.checked_mel(model, num_samples, batch, prompt, cond)
  hop, streams = model.hop_length, jnp.arange(first_stream, first_stream + batch)

  def render(lo, hi):
    z = latent(rng, lo, hi - lo, hop, streams, jnp.float32(temperature), model.latent_noise)
    return np.asarray(_inverse(model, variables, z, jnp.asarray(mel[:, lo:hi])))
  yield from vocoding.in_windows(render, mel.shape[1], hop, batch, num_samples, chunk_samples,
                                 model.context_frames)


def forward(model: MelFlow, variables: dict, x: jax.Array, cond: dict):
  """The family's flow `forward` on float audio [B, T] and a conditioning dict: (z, log_det)."""
  return model.apply(variables, x, _mel(model, cond), method='forward')


def inverse(model: MelFlow, variables: dict, z: jax.Array, cond: dict) -> jax.Array:
  """The family's flow `inverse`: latents [B, T] -> float audio [B, T] (not clipped)."""
  return model.apply(variables, z, _mel(model, cond), method='inverse')
