"""What the mel-conditioned GAN vocoders (MelGAN, HiFi-GAN) share: the Model's data fields, its
discriminators, its reconstruction losses, and the family contract's functions.

A GAN vocoder's Model subclasses `MelGAN` and defines `make_generator()`, a module from log-mel
frames [B, F, n_mels] to float audio [B, F hop] with a `reach_samples` property (the samples on
either side of a position that its output there depends on). The rest is here:

  discriminators  'msd' MelGAN's multi-scale, 'mpd+msd' HiFi-GAN's multi-period beside it,
                  'rwd' GAN-TTS's random-window ensemble (models/layers/discriminators.py)
  objective       models/layers/gan.py OBJECTIVES, with feature matching (weight
                  `feature_matching`)
  mel_loss        the weight of 'mel_l1': the mean L1 distance of the log-mels of the
                  generated and the real audio, with the input's mel settings (`mel_settings`,
                  derived from config.input: the distance the `spectral` evaluator reports),
                  averaged with the same at each window of `mel_fft_sizes` (hop a quarter of
                  it): HiFi-GAN's mel loss, and its multi-resolution form
  stft_loss       the weight of 'mr_stft', Parallel WaveGAN's multi-resolution STFT loss
                  (data/spectral.py multi_resolution_stft_loss)

Crops must be whole frames (T a multiple of the hop): the generator renders F = T / hop frames
exactly. Sampling is deterministic (no latent; `temperature` and the key are not used):
`generate` renders a long mel in windows with the generator's reach as context on either side
(models/layers/vocoding.py), each stream on its own, so there are no seams and a stream's audio
does not depend on the others.
"""

from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data import spectral
from models.layers import discriminators
from models.layers import gan
from models.layers import vocoding

DISCRIMINATORS = ('msd', 'mpd+msd', 'rwd')


class MelDiscriminators(nn.Module):
  """The discriminators of `kind` (DISCRIMINATORS) over audio [B, T] and its mel."""
  kind: str
  hop: int
  width: float = 1.0
  weight_norm: bool = True
  periods: tuple[int, ...] = (2, 3, 5, 7, 11)
  windows: tuple[int, ...] = (240, 480, 960, 1920, 3600)

  @nn.compact
  def __call__(self, x: jax.Array, mel: jax.Array, rng: jax.Array) -> list:
    out = []
    if self.kind == 'mpd+msd':
      out += discriminators.MultiPeriod(self.periods, self.width, self.weight_norm,
                                        name='mpd')(x)
    if self.kind in ('msd', 'mpd+msd'):
      out += discriminators.MultiScale(3, self.width, self.weight_norm, name='msd')(x)
    if self.kind == 'rwd':
      out += discriminators.RandomWindows(self.hop, self.windows, width=self.width,
                                          name='rwd')(x, mel, rng)
    return out


class MelGAN(nn.Module):
  """The fields a GAN vocoder shares; `models.create` derives the data facts."""
  sample_rate: int = 16000  # derived from config.input
  hop_length: int = 0  # samples per mel frame (derived)
  encoding: str = 'float'  # derived: a GAN vocoder renders float audio
  local_keys: tuple[str, ...] = ('mel',)
  local_features: int = 0  # n_mels (derived)
  discriminators: str = 'msd'  # DISCRIMINATORS
  discriminator_width: float = 1.0  # channels x this (runlocal shrinks them)
  periods: tuple[int, ...] = (2, 3, 5, 7, 11)  # 'mpd+msd'
  windows: tuple[int, ...] = (240, 480, 960, 1920, 3600)  # 'rwd', samples
  objective: str = 'hinge'
  feature_matching: float = 10.
  gradient_penalty: float = 0.
  mel_loss: float = 0.
  mel_fft_sizes: tuple[int, ...] = ()  # more resolutions of the mel loss
  mel_settings: tuple = ()  # derived: the input's log-mel arguments as (key, value) pairs
  stft_loss: float = 0.
  weight_norm: bool = True
  dtype: str = 'float32'

  def __post_init__(self):
    vocoding.check_fields(self, 'renders float audio', self.strides)
    if self.discriminators not in DISCRIMINATORS:
      raise ValueError(f'model.discriminators={self.discriminators!r}: expected one of '
                       f'{", ".join(DISCRIMINATORS)}')
    if self.mel_loss and not self.mel_settings:
      raise ValueError(f'model.mel_loss={self.mel_loss}: the mel loss needs the input\'s mel '
                       'settings (derived from config.input by models.create)')
    gan.check_objective(self.objective)
    super().__post_init__()

  @property
  def conditions(self) -> tuple[str, ...]:
    return tuple(self.local_keys)

  @property
  def has_reconstruction(self) -> bool:
    return bool(self.mel_loss or self.stft_loss)

  @property
  def strides(self) -> tuple[int, ...]:
    """The generator's upsampling strides (their product is the hop)."""
    raise NotImplementedError

  @property
  def context_frames(self) -> int:
    """Frames of context a window of `generate` needs on either side to be exact."""
    return -(-self.make_generator(parent=None).reach_samples // self.hop_length) + 1

  def make_generator(self, **kwargs) -> nn.Module:
    """The generator module (`kwargs`: Module keywords, e.g. parent=None for a detached one)."""
    raise NotImplementedError

  def setup(self):
    self.generator = self.make_generator()
    self.discriminator = MelDiscriminators(
        self.discriminators, self.hop_length, self.discriminator_width, self.weight_norm,
        tuple(self.periods), tuple(self.windows))

  # The GAN Model's methods (models/layers/gan.py).
  def conditioning(self, batch: dict) -> jax.Array:
    if 'mel' not in batch:
      raise ValueError("the model is conditioned on ('mel',); the batch has no ['mel'] (add "
                       'it to config.input.frame_features)')
    t = np.shape(batch['audio'])[1]
    if t % self.hop_length:
      raise ValueError(f'{t} samples: a GAN vocoder renders whole frames; set '
                       f'input.crop_samples to a multiple of the hop {self.hop_length}')
    return jnp.asarray(batch['mel'], jnp.float32)[:, :t // self.hop_length]

  def noise(self, rng, rows):
    del rng, rows
    return None

  def synthesize(self, z, mel: jax.Array) -> jax.Array:
    del z
    return self.generator(mel)

  def real(self, batch: dict) -> jax.Array:
    x = jnp.asarray(batch['audio'])
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f"batch['audio'] is {x.dtype}: a GAN vocoder needs float audio "
                       "(config.input.encoding='float')")
    return x

  def discriminate(self, x: jax.Array, mel: jax.Array, rng: jax.Array) -> list:
    return self.discriminator(x, mel, rng)

  def render(self, x: jax.Array, mel) -> jax.Array:
    del mel
    return x

  def reconstruction(self, real: jax.Array, fake: jax.Array) -> dict:
    out = {}
    if self.mel_loss:
      base = dict(self.mel_settings)
      settings = [base] + [dict(base, n_fft=n, win_length=n, hop_length=n // 4)
                           for n in self.mel_fft_sizes]
      distances = []
      for kw in settings:
        log_mel = lambda y, kw=kw: spectral.log_mel_spectrogram(y, **kw)
        distances.append(jnp.mean(jnp.abs(log_mel(fake) - log_mel(real))))
      out['mel_l1'] = (self.mel_loss, sum(distances) / len(distances))
    if self.stft_loss:
      out['mr_stft'] = (self.stft_loss, spectral.multi_resolution_stft_loss(fake, real))
    return out

  def initialize(self, batch: dict, rng: jax.Array) -> list:
    mel = self.conditioning(batch)
    return self.discriminate(self.synthesize(None, mel), mel, rng)


init, fake, loss = gan.init, gan.fake, gan.loss
discriminator_loss, generator_loss = gan.discriminator_loss, gan.generator_loss


def generate(model: MelGAN, variables: dict, rng: jax.Array, num_samples: int, *,
             batch: int = 1, prompt=None, cond: dict | None = None, temperature: float = 1.0,
             chunk_samples: int = 16000, first_stream: int = 0) -> Iterator[np.ndarray]:
  """The contract's `generate`: float audio chunks [B, <= chunk_samples] rendered from
  cond['mel'] [B, F, n_mels] (num_samples <= F hop), window by window."""
  del rng, temperature, first_stream  # deterministic
  mel = vocoding.checked_mel(model, num_samples, batch, prompt, cond)
  variables = {'params': {'generator': variables['params']['generator']}}
  render = lambda lo, hi: np.asarray(gan.render_streams(model, variables, None,
                                                        jnp.asarray(mel[:, lo:hi])))
  yield from vocoding.in_windows(render, mel.shape[1], model.hop_length, batch, num_samples,
                                 chunk_samples, model.context_frames)
