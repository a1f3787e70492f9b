"""HiFi-GAN's generators (Kong et al. 2020), V1 to V3, trained against its multi-period and
multi-scale discriminators (models/layers/gan_vocoder.py, discriminators='mpd+msd').

    mel [B, F, n_mels] --conv 7 to `channels`-->
      for each upsampling stride s (kernel k): leaky ReLU 0.1 -> transposed conv (stride s,
        width k, channels halved) -> multi-receptive-field fusion: the mean of one residual
        block per kernel size in `resblock_kernels`
      --leaky ReLU 0.01 -> conv 7 to 1 -> tanh--> audio [B, F hop]

Residual blocks: 'type1' (V1, V2) runs, for each dilation d, x += conv(k, 1)(lrelu(conv(k,
d)(lrelu(x)))); 'type2' (V3) x += conv(k, d)(lrelu(x)). The dilations of each kernel's block
are `resblock_dilations`, flat, split evenly over the kernels. Every convolution
weight-normalised (the published code). The papers' settings at hop 256 and here at the 16 kHz
data's hop of 512 (the last stride doubled, its kernel with it):

    V1  channels 512, strides 8 8 2 2 (kernels 16 16 4 4), type1 kernels 3 7 11 dilations
        1 3 5 each (13.9 M parameters at 22 kHz)
    V2  as V1 with 128 channels (0.9 M)
    V3  channels 256, strides 8 8 4 (kernels 16 16 8), type2 kernels 3 5 7 dilations
        (1 2) (2 6) (3 12) (1.5 M)
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

SLOPE = 0.1
RESBLOCKS = ('type1', 'type2')


class ResBlock(nn.Module):
  channels: int
  kernel_size: int
  dilations: tuple[int, ...]
  kind: str = 'type1'
  weight_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c, k, wn = self.channels, self.kernel_size, self.weight_norm
    for i, d in enumerate(self.dilations):
      h = conv.Conv(c, (k,), dilation=(d,), weight_norm=wn, name=f'dilated{i}')(
          jax.nn.leaky_relu(x, SLOPE))
      if self.kind == 'type1':
        h = conv.Conv(c, (k,), weight_norm=wn, name=f'plain{i}')(jax.nn.leaky_relu(h, SLOPE))
      x = x + h
    return x


class Generator(nn.Module):
  """HiFi-GAN's generator: log-mel frames [B, F, n_mels] -> audio [B, F prod(strides)]."""
  strides: tuple[int, ...]
  kernels: tuple[int, ...]
  channels: int = 512
  resblock: str = 'type1'
  resblock_kernels: tuple[int, ...] = (3, 7, 11)
  resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5),) * 3
  weight_norm: bool = True

  @property
  def reach_samples(self) -> int:
    hop = math.prod(self.strides)
    per_block = 2 if self.resblock == 'type1' else 1
    mrf = max((k - 1) // 2 * (sum(ds) + (per_block - 1) * len(ds))
              for k, ds in zip(self.resblock_kernels, self.resblock_dilations))
    reach, step = 3 * hop, hop  # the input conv: 3 frames each side
    for s, k in zip(self.strides, self.kernels):
      reach += -(-k // s) * step  # the transposed conv: the inputs its kernel spans
      step //= s
      reach += mrf * step
    return reach + 3

  @nn.compact
  def __call__(self, mel: jax.Array) -> jax.Array:
    wn = self.weight_norm
    x = mel.astype(jnp.float32) / conditioning.DIVISOR['mel']
    x = conv.Conv(self.channels, (7,), weight_norm=wn, name='input')(x)
    c = self.channels
    for i, (s, k) in enumerate(zip(self.strides, self.kernels)):
      c //= 2
      x = conv.ConvTranspose(c, k, s, weight_norm=wn, name=f'up{i}')(jax.nn.leaky_relu(x, SLOPE))
      x = sum(ResBlock(c, rk, tuple(ds), self.resblock, wn, name=f'mrf{i}_{j}')(x)
              for j, (rk, ds) in enumerate(zip(self.resblock_kernels,
                                               self.resblock_dilations))) / len(
                                                   self.resblock_kernels)
    x = conv.Conv(1, (7,), weight_norm=wn, name='output')(jax.nn.leaky_relu(x, 0.01))
    return jnp.tanh(x[..., 0])


class Model(gan_vocoder.MelGAN):
  """HiFi-GAN; `Model(**config.model)`."""
  upsample_strides: tuple[int, ...] = (8, 8, 4, 2)  # product hop_length
  upsample_kernels: tuple[int, ...] = (16, 16, 8, 4)
  channels: int = 512
  resblock: str = 'type1'
  resblock_kernels: tuple[int, ...] = (3, 7, 11)
  resblock_dilations: tuple[int, ...] = (1, 3, 5) * 3  # flat: split evenly over the kernels

  def __post_init__(self):
    if len(self.upsample_kernels) != len(self.upsample_strides) or any(
        k < s for k, s in zip(self.upsample_kernels, self.upsample_strides)):
      raise ValueError(f'model.upsample_kernels={self.upsample_kernels}: one per stride, each '
                       f'at least its stride {self.upsample_strides}')
    if self.resblock not in RESBLOCKS:
      raise ValueError(f'model.resblock={self.resblock!r}: expected one of {RESBLOCKS}')
    if len(self.resblock_dilations) % len(self.resblock_kernels):
      raise ValueError(f'model.resblock_dilations={self.resblock_dilations}: not split evenly '
                       f'over the {len(self.resblock_kernels)} resblock_kernels')
    super().__post_init__()

  @property
  def strides(self) -> tuple[int, ...]:
    return tuple(self.upsample_strides)

  def make_generator(self, **kwargs) -> nn.Module:
    n = len(self.resblock_dilations) // len(self.resblock_kernels)
    dilations = tuple(tuple(self.resblock_dilations[i:i + n])
                      for i in range(0, len(self.resblock_dilations), n))
    return Generator(tuple(self.upsample_strides), tuple(self.upsample_kernels), self.channels,
                     self.resblock, tuple(self.resblock_kernels), dilations, self.weight_norm,
                     **kwargs)
