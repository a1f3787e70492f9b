"""MelGAN (Kumar et al. 2019): a feed-forward mel vocoder trained adversarially.

    mel [B, F, n_mels] --conv 7 (reflect) to `channels`-->
      for each upsampling stride s: leaky ReLU 0.2 -> transposed conv (width 2 s, stride s,
        channels halved) -> residual stack of `residual_layers` blocks (dilations 1, 3, 9)
      --leaky ReLU -> conv 7 to 1 -> tanh--> audio [B, F hop]

Residual block: x + conv1x1(x) ... as the published code: shortcut conv 1x1 plus (leaky ReLU,
conv 3 dilated d with reflection padding, leaky ReLU, conv 1x1). Every convolution
weight-normalised. The paper's generator: 512 channels after the input conv, strides
8, 8, 2, 2 at hop 256 (here 8, 8, 4, 2 at the 16 kHz data's hop of 512). The discriminators,
the losses and the family functions are models/layers/gan_vocoder.py's: MelGAN's own is the
multi-scale discriminator with a hinge loss and feature matching (weight 10); the config
picks GAN-TTS's random windows or HiFi-GAN's multi-period discriminator instead.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import conditioning
from models.layers import conv
from models.layers import gan_vocoder

init, loss, generate = gan_vocoder.init, gan_vocoder.loss, gan_vocoder.generate
fake = gan_vocoder.fake
discriminator_loss, generator_loss = gan_vocoder.discriminator_loss, gan_vocoder.generator_loss

SLOPE = 0.2


class ResidualBlock(nn.Module):
  channels: int
  dilation: int
  weight_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, wn = self.channels, self.weight_norm
    h = conv.Conv(c, (3,), dilation=(self.dilation,), padding='reflect', weight_norm=wn,
                  name='dilated')(jax.nn.leaky_relu(x, SLOPE))
    h = conv.Conv(c, (1,), weight_norm=wn, name='pointwise')(jax.nn.leaky_relu(h, SLOPE))
    return conv.Conv(c, (1,), weight_norm=wn, name='shortcut')(x) + h


class Generator(nn.Module):
  """MelGAN's generator: log-mel frames [B, F, n_mels] -> audio [B, F prod(strides)]."""
  strides: tuple[int, ...]
  channels: int = 512
  residual_layers: int = 3
  weight_norm: bool = True

  @property
  def reach_samples(self) -> int:
    hop = math.prod(self.strides)
    reach, step = 3 * hop, hop  # the input conv: 3 frames each side
    for s in self.strides:
      reach += step  # the transposed conv: one input step
      step //= s
      reach += sum(3 ** j for j in range(self.residual_layers)) * step
    return reach + 3

  @nn.compact
  def __call__(self, mel: jax.Array) -> jax.Array:
    wn = self.weight_norm
    x = mel.astype(jnp.float32) / conditioning.DIVISOR['mel']
    x = conv.Conv(self.channels, (7,), padding='reflect', weight_norm=wn, name='input')(x)
    c = self.channels
    for i, s in enumerate(self.strides):
      c //= 2
      x = conv.ConvTranspose(c, 2 * s, s, weight_norm=wn, name=f'up{i}')(
          jax.nn.leaky_relu(x, SLOPE))
      for j in range(self.residual_layers):
        x = ResidualBlock(c, 3 ** j, wn, name=f'stack{i}_{j}')(x)
    x = conv.Conv(1, (7,), padding='reflect', weight_norm=wn, name='output')(
        jax.nn.leaky_relu(x, SLOPE))
    return jnp.tanh(x[..., 0])


class Model(gan_vocoder.MelGAN):
  """MelGAN; `Model(**config.model)`."""
  upsample_strides: tuple[int, ...] | None = None  # product hop_length; None: (8, 8, 4, 2)
  channels: int = 512
  residual_layers: int = 3

  def __post_init__(self):
    if self.channels % 2 ** len(self.strides):
      raise ValueError(f'model.channels={self.channels}: halved at each of '
                       f'{len(self.strides)} strides, so a multiple of {2 ** len(self.strides)}')
    super().__post_init__()

  @property
  def strides(self) -> tuple[int, ...]:
    return tuple(self.upsample_strides or (8, 8, 4, 2))

  def make_generator(self, **kwargs) -> nn.Module:
    return Generator(self.strides, self.channels, self.residual_layers, self.weight_norm,
                     **kwargs)
