"""The waveform discriminators of the mel GAN vocoders. Each maps audio x [B, T] (and the mel
[B, F, n_mels], for the conditional ones) to a list of (logits, [features]) per discriminator
(models/layers/gan.py: the objectives sum over the list; feature matching runs over the
features).

  MultiScale    MelGAN's (Kumar et al. 2019): 3 identical window discriminators on the audio
                and on its 2x and 4x average-pooled versions. Each: a conv of width 15 to 16
                channels, 4 grouped strided convs (width 41, stride 4; 64, 256, 1024, 1024
                channels in 4, 16, 64, 256 groups), a conv of width 5, a conv of width 3 to 1
                logit per position; leaky ReLU 0.2.
  MultiPeriod   HiFi-GAN's (Kong et al. 2020): for each period p in (2, 3, 5, 7, 11) the audio
                folded into [T / p, p] (reflection-padded to a multiple of p) and read by 2-D
                convs of (5, 1) at stride (3, 1) (32, 128, 512, 1024 channels), a (5, 1) conv
                and a (3, 1) conv to the logits: each sees every p-th sample.
  RandomWindows GAN-TTS's ensemble (Binkowski et al. 2020): for each window size w, one
                unconditional and one mel-conditional discriminator, each reading a random
                window of w samples per row (starting on a frame for the conditional one). The
                window is folded into [base, w / base] (base: the smallest window) so that
                every size runs at `base` steps, then downsampling residual blocks (DBlocks); the
                conditional one adds the window's mel frames, projected, once its rate
                reaches the frame rate. Logits: the mean over time of a linear map.

Channels scale with `width` (1.0: the papers'), so that runlocal shrinks them.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import conditioning
from models.layers import conv
from models.layers import gan

SLOPE = 0.2  # leaky ReLU of every discriminator here


def _c(width: float, c: int) -> int:
  return max(1, int(round(c * width)))


class ScaleDiscriminator(nn.Module):
  """One of MelGAN's window discriminators over x [B, T, 1]."""
  width: float = 1.0
  weight_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    feats = []
    prev = _c(self.width, 16)
    top = _c(self.width, 1024)
    layers = [(prev, 15, 1, 1)]
    for _ in range(4):
      nf = min(prev * 4, top)
      layers.append((nf, 41, 4, math.gcd(max(prev // 4, 1), nf)))
      prev = nf
    layers.append((top, 5, 1, 1))
    for i, (c, k, s, g) in enumerate(layers):
      x = conv.Conv(c, (k,), (s,), groups=g, weight_norm=self.weight_norm, name=f'conv{i}')(x)
      x = jax.nn.leaky_relu(x, SLOPE)
      feats.append(x)
    logits = conv.Conv(1, (3,), weight_norm=self.weight_norm, name='logits')(x)
    return logits[..., 0], feats


def _avg_pool(x: jax.Array) -> jax.Array:
  """Average pooling of width 4, stride 2, padding 1 (zeros not counted), as MelGAN's."""
  ones = jnp.ones_like(x[..., :1])
  pool = lambda v: nn.avg_pool(v, (4,), (2,), padding=((1, 1),), count_include_pad=True)
  return pool(x) / pool(ones)


class MultiScale(nn.Module):
  scales: int = 3
  width: float = 1.0
  weight_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, mel=None, rng=None) -> list:
    del mel, rng
    x = x[..., None]
    out = []
    for i in range(self.scales):
      if i:
        x = _avg_pool(x)
      out.append(ScaleDiscriminator(self.width, self.weight_norm, name=f'scale{i}')(x))
    return out


class PeriodDiscriminator(nn.Module):
  """HiFi-GAN's discriminator of period p over x [B, T]."""
  period: int
  width: float = 1.0
  weight_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    p, t = self.period, x.shape[1]
    if t % p:
      x = jnp.pad(x, ((0, 0), (0, p - t % p)), mode='reflect')
    x = x.reshape(x.shape[0], -1, p, 1)  # [B, T / p, p, 1]
    feats = []
    for i, c in enumerate((32, 128, 512, 1024, 1024)):
      s = 3 if i < 4 else 1
      x = conv.Conv(_c(self.width, c), (5, 1), (s, 1), weight_norm=self.weight_norm,
                    name=f'conv{i}')(x)
      x = jax.nn.leaky_relu(x, SLOPE)
      feats.append(x)
    logits = conv.Conv(1, (3, 1), weight_norm=self.weight_norm, name='logits')(x)
    return logits[..., 0].reshape(x.shape[0], -1), feats


class MultiPeriod(nn.Module):
  periods: tuple[int, ...] = (2, 3, 5, 7, 11)
  width: float = 1.0
  weight_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, mel=None, rng=None) -> list:
    del mel, rng
    return [PeriodDiscriminator(p, self.width, self.weight_norm, name=f'period{p}')(x)
            for p in self.periods]


class DBlock(nn.Module):
  """GAN-TTS's downsampling residual block: two width-3 convs (the second dilated by 2) after
  ReLUs, average pooling by `factor` on both paths, a 1x1 shortcut where channels change."""
  features: int
  factor: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pool = lambda v: v if self.factor == 1 else nn.avg_pool(v, (self.factor,), (self.factor,))
    h = conv.Conv(self.features, (3,), name='conv0')(pool(jax.nn.relu(x)))
    h = conv.Conv(self.features, (3,), dilation=(2,), name='conv1')(jax.nn.relu(h))
    skip = pool(x)
    if x.shape[-1] != self.features:
      skip = conv.Conv(self.features, (1,), name='shortcut')(skip)
    return h + skip


class WindowDiscriminator(nn.Module):
  """One of GAN-TTS's random-window discriminators over windows [B, w] (and, when conditional,
  the mel frames [B, n, n_mels] they lie in): folded to `base` steps, DBlocks of 64, 128, 256,
  256, 256 channels downsampling by 1, 5, 3, 1, 1, the mel (nearest frame per step, projected)
  added after the second."""
  base: int
  conditional: bool
  width: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, mel=None) -> tuple[jax.Array, list[jax.Array]]:
    b, w = x.shape
    h = x.reshape(b, self.base, w // self.base)  # [B, base, w / base]
    feats = []
    for i, (ch, f) in enumerate(((64, 1), (128, 5), (256, 3), (256, 1), (256, 1))):
      f = f if h.shape[1] % f == 0 else 1
      h = DBlock(_c(self.width, ch), f, name=f'block{i}')(h)
      if i == 1 and self.conditional:
        m = jax.image.resize(mel, (b, h.shape[1], mel.shape[-1]), 'nearest')
        h = h + nn.Dense(h.shape[-1], name='mel')(m)
      feats.append(h)
    logits = nn.Dense(1, name='logits')(jax.nn.relu(h))[..., 0]  # [B, steps]
    return jnp.mean(logits, axis=1, keepdims=True), feats


class RandomWindows(nn.Module):
  """GAN-TTS's ensemble; `rng` draws each discriminator's windows (gan.window_starts): the
  unconditional ones anywhere, the conditional ones from a frame boundary, with the
  ceil(w / hop) frames that start there."""
  hop: int
  windows: tuple[int, ...] = (240, 480, 960, 1920, 3600)  # the first is the base
  width: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, mel: jax.Array, rng: jax.Array) -> list:
    b, t = x.shape
    base = self.windows[0]
    mel = mel.astype(jnp.float32) / conditioning.DIVISOR['mel']
    out = []
    for i, w in enumerate(self.windows):
      if w % base:
        raise ValueError(f'model.windows={self.windows}: {w} is not a multiple of the first')
      key = jax.random.fold_in(rng, i)
      starts = gan.window_starts(jax.random.fold_in(key, 0), b, t, w)
      out.append(WindowDiscriminator(base, False, self.width, name=f'uncond{w}')(
          gan.cut(x, starts, w)))
      frames = -(-w // self.hop)
      starts = gan.window_starts(jax.random.fold_in(key, 1), b, t, frames * self.hop, self.hop)
      out.append(WindowDiscriminator(base, True, self.width, name=f'cond{w}')(
          gan.cut(x, starts, w), gan.cut(mel, starts // self.hop, frames)))
    return out
