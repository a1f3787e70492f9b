"""Convolutions of the adversarial families: 1-D and 2-D, grouped, dilated, strided and
transposed, with optional weight normalisation (Salimans and Kingma 2016), as MelGAN's,
HiFi-GAN's and WaveGAN's networks use them.

Weight normalisation as PyTorch's `weight_norm` does it: the kernel is g v / |v|, |v| the norm
of each output channel's weights, and g starts at |v| of the initial v, so the first forward
pass is that of the plain convolution. Kernels start LeCun-normal (variance 1 / fan-in) unless
`init_std` is given (DCGAN-style networks: N(0, 0.02)). The parameters are replicated over the
mesh (no logical axes): these networks are small beside their activations, which the batch
axis shards.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def kernel(module: nn.Module, shape: tuple[int, ...], init_std: float | None = None,
           weight_norm: bool = False) -> jax.Array:
  """The kernel [*spatial, in, out] of `module` (weight-normalised over all but the last axis)."""
  init = (nn.initializers.lecun_normal() if init_std is None
          else nn.initializers.normal(init_std))
  v = module.param('kernel', init, shape)
  if not weight_norm:
    return v
  axes = tuple(range(len(shape) - 1))
  norm = lambda w: jnp.sqrt(jnp.sum(jnp.square(w), axis=axes))
  g = module.param('scale', lambda _: norm(v))
  return v * (g / jnp.maximum(norm(v), 1e-12))


class Conv(nn.Module):
  """A convolution over x [B, *spatial, C] (1-D: one spatial axis, 2-D: two), its padding
  `(k - 1) d / 2` on each side of each axis ('same' length at stride 1), zeros or reflected."""
  features: int
  kernel_size: tuple[int, ...]
  strides: tuple[int, ...] | None = None
  dilation: tuple[int, ...] | None = None
  groups: int = 1
  padding: str = 'zeros'  # 'zeros' or 'reflect'
  weight_norm: bool = False
  init_std: float | None = None
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n = len(self.kernel_size)
    strides = self.strides or (1,) * n
    dilation = self.dilation or (1,) * n
    c = x.shape[-1]
    if c % self.groups or self.features % self.groups:
      raise ValueError(f'{self.name}: {c} -> {self.features} channels in {self.groups} groups')
    k = kernel(self, (*self.kernel_size, c // self.groups, self.features), self.init_std,
               self.weight_norm)
    pads = [((ks - 1) * d // 2, (ks - 1) * d - (ks - 1) * d // 2)
            for ks, d in zip(self.kernel_size, dilation)]
    if self.padding == 'reflect':
      x = jnp.pad(x, ((0, 0), *pads, (0, 0)), mode='reflect')
      pads = [(0, 0)] * n
    dims = ('NWC', 'WIO', 'NWC') if n == 1 else ('NHWC', 'HWIO', 'NHWC')
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), k.astype(self.dtype), strides, pads, rhs_dilation=dilation,
        dimension_numbers=dims, feature_group_count=self.groups)
    return y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(self.dtype)


class ConvTranspose(nn.Module):
  """A transposed convolution of stride s over x [B, *spatial, C] -> [B, *(spatial s), features]
  (1-D: ints or 1-tuples; 2-D: 2-tuples), each kernel width k >= s, cropped as PyTorch's
  ConvTranspose with padding (k - s + 1) // 2 and output padding (k - s) % 2: the output is
  exactly s times longer along each axis."""
  features: int
  kernel_size: int | tuple[int, ...]
  stride: int | tuple[int, ...]
  weight_norm: bool = False
  init_std: float | None = None
  dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    as_tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,)
    ks, ss = as_tuple(self.kernel_size), as_tuple(self.stride)
    if any(k < s for k, s in zip(ks, ss)):
      raise ValueError(f'{self.name}: kernel {ks} narrower than the stride {ss}')
    w = kernel(self, (*ks, x.shape[-1], self.features), self.init_std, self.weight_norm)
    dims = ('NWC', 'WIO', 'NWC') if len(ks) == 1 else ('NHWC', 'HWIO', 'NHWC')
    # The full transposed convolution: input dilated by s, padded k - 1 on each side.
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), jnp.flip(w, tuple(range(len(ks)))).astype(self.dtype),
        (1,) * len(ks), [(k - 1, k - 1) for k in ks], lhs_dilation=ss,
        dimension_numbers=dims)  # [B, *((n - 1) s + k), F]
    for axis, (k, s) in enumerate(zip(ks, ss)):
      start = (k - s + 1) // 2
      y = jax.lax.slice_in_dim(y, start, start + x.shape[1 + axis] * s, axis=1 + axis)
    return y + self.param('bias', nn.initializers.zeros, (self.features,)).astype(self.dtype)
