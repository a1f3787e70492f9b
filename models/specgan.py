"""SpecGAN (Donahue et al. 2019): WaveGAN's game on log-magnitude spectrograms, a DCGAN of 2-D
convolutions, the audio recovered by Griffin-Lim (data/spectral.py).

    clip [B, 16,384] --STFT (256-sample Hann window, hop 128; the first 128 frames and the
      128 bins below Nyquist)--> log(|X| + 1e-6) --per-bin moments: (s - mean) / (3 std),
      clipped to [-1, 1]--> [B, 128 frames, 128 bins]
    z ~ U(-1, 1)^latent_dim --dense--> [4, 4, 16 d] --ReLU, 5 x transposed conv (5 x 5, stride
      2; 8 d, 4 d, 2 d, d, 1 channels), tanh last--> [B, 128, 128]
    discriminator: 5 x conv (5 x 5, stride 2; d ... 16 d), leaky ReLU 0.2 --> dense --> 1

The per-bin moments are the mean and variance of the training data's log magnitudes: a running
average over every real batch the discriminator sees (the 'moments' collection, the model state
of the contract, checkpointed), as the paper computes them over its training set before
training. Rendering undoes the normalisation (frames at +-3 std stay clipped), appends a silent
Nyquist bin, and runs `griffin_lim_iters` Griffin-Lim iterations (the paper: 16) from a zero
phase. The paper's: d = 64, latent 100, WGAN-GP lambda 10, 5 critic steps, Adam 1e-4, betas
(0.5, 0.9), batch 64.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from data import spectral
from models.layers import conv
from models.layers import gan

init, loss, fake = gan.init, gan.loss, gan.fake
discriminator_loss, generator_loss, generate = (gan.discriminator_loss, gan.generator_loss,
                                                gan.clips)

N_FFT, HOP, BINS = 256, 128, 128
SLOPE, CLIP_STD, EPS = 0.2, 3.0, 1e-6


class Generator(nn.Module):
  dim: int = 64
  layers: int = 5

  @nn.compact
  def __call__(self, z: jax.Array, frames: int) -> jax.Array:
    side = frames // 2 ** self.layers
    c = self.dim * 2 ** (self.layers - 1)  # 16 d
    x = nn.Dense(side * side * c, name='project')(z).reshape(z.shape[0], side, side, c)
    for i in range(self.layers):
      x = jax.nn.relu(x)
      features = c // 2 ** (i + 1) if i < self.layers - 1 else 1
      x = conv.ConvTranspose(features, (5, 5), (2, 2), name=f'up{i}')(x)
    return jnp.tanh(x[..., 0])  # [B, frames, bins]


class Discriminator(nn.Module):
  dim: int = 64
  layers: int = 5

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    x = x[..., None]
    feats = []
    for i in range(self.layers):
      x = conv.Conv(self.dim * 2 ** i, (5, 5), (2, 2), name=f'conv{i}')(x)
      x = jax.nn.leaky_relu(x, SLOPE)
      feats.append(x)
    return nn.Dense(1, name='logits')(x.reshape(x.shape[0], -1)), feats


def log_magnitude(audio: jax.Array) -> jax.Array:
  """Clips [B, 16,384] -> log magnitudes [B, 128 frames, 128 bins]."""
  s = jnp.abs(spectral.stft(audio, n_fft=N_FFT, hop_length=HOP))  # [B, 129, F]
  return jnp.log(jnp.swapaxes(s[:, :BINS], 1, 2)[:, :BINS] + EPS)


class Model(gan.ClipGAN):
  """SpecGAN; `Model(**config.model)`."""
  dim: int = 64
  layers: int = 5
  griffin_lim_iters: int = 16

  def __post_init__(self):
    if self.clip_samples != BINS * HOP:
      raise ValueError(f'model.clip_samples={self.clip_samples}: SpecGAN draws {BINS} frames '
                       f'of {HOP} samples, {BINS * HOP}')
    super().__post_init__()

  def setup(self):
    self.generator = Generator(self.dim, self.layers)
    self.discriminator = Discriminator(self.dim, self.layers)
    self.mean = self.variable('moments', 'mean', jnp.zeros, (BINS,))
    self.var = self.variable('moments', 'var', jnp.ones, (BINS,))
    self.count = self.variable('moments', 'count', jnp.zeros, ())

  def synthesize(self, z: jax.Array, cond) -> jax.Array:
    del cond
    return self.generator(z, BINS)

  def real(self, batch: dict) -> jax.Array:
    """The batch's normalised spectrograms; the moments take the batch in when mutable."""
    s = log_magnitude(self.clip(batch))  # [B, frames, bins]
    mean, var, count = self.mean, self.var, self.count
    if self.is_mutable_collection('moments') and not self.is_initializing():
      n = s.shape[0] * s.shape[1]
      b_mean, b_sq = jnp.mean(s, axis=(0, 1)), jnp.mean(jnp.square(s), axis=(0, 1))
      total = count.value + n
      sq = (var.value + jnp.square(mean.value)) * (count.value / total) + b_sq * (n / total)
      mean.value = mean.value * (count.value / total) + b_mean * (n / total)
      var.value = jnp.maximum(sq - jnp.square(mean.value), 0.)
      count.value = total
    return self._normalise(s)

  def _normalise(self, s: jax.Array) -> jax.Array:
    mean, var = self.mean, self.var
    std = jnp.sqrt(var.value) + EPS
    return jnp.clip((s - mean.value) / (CLIP_STD * std), -1., 1.)

  def discriminate(self, x: jax.Array, cond, rng: jax.Array) -> list:
    del cond, rng
    return [self.discriminator(x)]

  def render(self, x: jax.Array, cond) -> jax.Array:
    """Normalised spectrograms [B, frames, bins] -> audio [B, clip_samples] (Griffin-Lim)."""
    del cond
    mean, var = self.mean, self.var
    log_mag = x * CLIP_STD * (jnp.sqrt(var.value) + EPS) + mean.value
    mag = jnp.maximum(jnp.exp(log_mag) - EPS, 0.)
    mag = jnp.swapaxes(jnp.pad(mag, ((0, 0), (0, 1), (0, 1))), 1, 2)  # [B, bins + 1, F + 1]
    return spectral.griffin_lim(mag, n_iter=self.griffin_lim_iters, hop_length=HOP,
                                n_fft=N_FFT, length=self.clip_samples, init=None)
