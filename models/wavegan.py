"""WaveGAN (Donahue et al. 2019): an unconditional DCGAN of 1-D convolutions over short clips,
trained with WGAN-GP (models/layers/gan.py: the objectives, the gradient penalty, phase
shuffle; experiments/train_gan.py: the game).

    z ~ U(-1, 1)^latent_dim --dense--> [16, 16 d] --ReLU, 5 x transposed conv (width 25,
      stride 4; 8 d, 4 d, 2 d, d, 1 channels), ReLU between, tanh last--> clip [B, 16,384]
    clip --5 x conv (width 25, stride 4; d, 2 d, 4 d, 8 d, 16 d channels), leaky ReLU 0.2, phase
      shuffle (+-`phase_shuffle` samples, reflected) after each but the last--> dense --> 1

The paper's: d = 64, latent 100, phase shuffle 2, WGAN-GP with lambda 10 and 5 critic steps
per generator step, Adam 1e-4, betas (0.5, 0.9), batch 64, clips of 16,384 samples (1.024 s at
16 kHz). `generate` draws clip after clip per stream (gan.clips); `temperature` scales z.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import conv
from models.layers import gan

init, loss, fake = gan.init, gan.loss, gan.fake
discriminator_loss, generator_loss, generate = (gan.discriminator_loss, gan.generator_loss,
                                                gan.clips)

SLOPE = 0.2


class Generator(nn.Module):
  dim: int = 64
  kernel_size: int = 25
  stride: int = 4
  layers: int = 5

  @nn.compact
  def __call__(self, z: jax.Array, clip_samples: int) -> jax.Array:
    steps = clip_samples // self.stride ** self.layers
    c = self.dim * 2 ** (self.layers - 1)  # 16 d
    x = nn.Dense(steps * c, name='project')(z).reshape(z.shape[0], steps, c)
    for i in range(self.layers):
      x = jax.nn.relu(x)
      features = c // 2 ** (i + 1) if i < self.layers - 1 else 1
      x = conv.ConvTranspose(features, self.kernel_size, self.stride, name=f'up{i}')(x)
    return jnp.tanh(x[..., 0])  # [B, clip_samples]


class Discriminator(nn.Module):
  dim: int = 64
  kernel_size: int = 25
  stride: int = 4
  layers: int = 5
  phase_shuffle: int = 2

  @nn.compact
  def __call__(self, x: jax.Array, rng: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    x = x[..., None]
    feats = []
    for i in range(self.layers):
      x = conv.Conv(self.dim * 2 ** i, (self.kernel_size,), (self.stride,), name=f'conv{i}')(x)
      x = jax.nn.leaky_relu(x, SLOPE)
      feats.append(x)
      if i < self.layers - 1:
        x = gan.phase_shuffle(x, jax.random.fold_in(rng, i), self.phase_shuffle)
    logits = nn.Dense(1, name='logits')(x.reshape(x.shape[0], -1))
    return logits, feats


class Model(gan.ClipGAN):
  """WaveGAN; `Model(**config.model)`."""
  dim: int = 64
  kernel_size: int = 25
  stride: int = 4
  layers: int = 5
  phase_shuffle: int = 2

  def __post_init__(self):
    if self.clip_samples % self.stride ** self.layers:
      raise ValueError(f'model.clip_samples={self.clip_samples}: expected a multiple of '
                       f'stride^layers = {self.stride ** self.layers}')
    super().__post_init__()

  def setup(self):
    self.generator = Generator(self.dim, self.kernel_size, self.stride, self.layers)
    self.discriminator = Discriminator(self.dim, self.kernel_size, self.stride, self.layers,
                                       self.phase_shuffle)

  def synthesize(self, z: jax.Array, cond) -> jax.Array:
    del cond
    return self.generator(z, self.clip_samples)

  def real(self, batch: dict) -> jax.Array:
    return self.clip(batch)

  def discriminate(self, x: jax.Array, cond, rng: jax.Array) -> list:
    del cond
    return [self.discriminator(x, rng)]
