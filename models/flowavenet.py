"""FloWaveNet (Kim et al. 2019): a multi-scale mel-conditioned flow, sampled in one pass.

    x [B, T, 1] --num_blocks x [squeeze by 2 (audio and conditioning alike)
                               --flows_per_block x (ActNorm -> affine coupling -> swap halves)
                               -- every `split_every`-th block but the last: half the
                                  channels to z (multi-scale)]--> z [B, T]

ActNorm starts from the statistics of the first training batch (models/layers/flows.py; the
'actnorm' collection is the model state). The coupling's network is a non-causal WaveNet
(`flows.WN`: `num_layers` gated layers of `channels`, width 3) of the first half of the
channels and of half the upsampled mel, squeezed with the audio: block b's conditioning has
2^(b+1) n_mels channels per position, and its flows read the halves in turn. Swapping the halves after each coupling
is the "change of order" that lets the next coupling transform the other half.

The paper's network: 8 blocks of 6 flows, 2-layer WNs of 256 channels, a split after block 4,
mel upsampled by two transposed convolutions (strides 16 x 16 at hop 256). Its split-off
halves have a learned Gaussian prior conditioned on the kept half; here every part of z has
the standard Gaussian prior, as in WaveGlow. z is laid out in time (the parts at each scale
reshaped to the coarsest step, 2^num_blocks samples, and concatenated there).

The family contract's `init`, `loss` and `generate` are models/layers/flow_vocoder.py's.
"""

import jax
import jax.numpy as jnp

from models.layers import flow_vocoder
from models.layers import flows

init, loss, generate = flow_vocoder.init, flow_vocoder.loss, flow_vocoder.generate
forward, inverse = flow_vocoder.forward, flow_vocoder.inverse


class Model(flow_vocoder.MelFlow):
  """FloWaveNet; `Model(**config.model)`."""
  num_blocks: int = 8
  flows_per_block: int = 6
  channels: int = 256
  num_layers: int = 2
  kernel_size: int = 3
  split_every: int = 4  # 0: no multi-scale split

  @property
  def granularity(self) -> int:
    return 2 ** self.num_blocks

  def _split(self, b: int) -> bool:
    return bool(self.split_every) and (b + 1) % self.split_every == 0 and (
        b < self.num_blocks - 1)

  @property
  def widths(self) -> tuple[int, ...]:
    """The channels of each block's flows."""
    out, c = [], 1
    for b in range(self.num_blocks):
      c *= 2
      out.append(c)
      c //= 2 if self._split(b) else 1
    return tuple(out)

  @property
  def reach_samples(self) -> int:
    per_flow = (self.kernel_size - 1) // 2 * (2 ** self.num_layers - 1)
    return sum(self.flows_per_block * per_flow * 2 ** (b + 1) for b in range(self.num_blocks))

  def setup(self):
    self.upsampler = flows.Upsampler(self.strides, self.param_dtype)
    self.norms = [[flows.ActNorm(c, self.param_dtype) for _ in range(self.flows_per_block)]
                  for c in self.widths]
    self.couplings = [[flows.AffineCoupling(c, self.channels, self.num_layers,
                                            self.kernel_size, self.dtype, self.param_dtype)
                       for _ in range(self.flows_per_block)] for c in self.widths]

  def _conds(self, mel: jax.Array, t: int) -> list[jax.Array]:
    """The conditioning at each block's scale."""
    c, out = self.per_sample(mel, self.upsampler, t), []
    for _ in range(self.num_blocks):
      c = flows.squeeze(c, 2)
      out.append(c)
    return out

  def forward(self, x: jax.Array, mel: jax.Array):
    """x [B, T] float audio, mel [B, F, n_mels] log-mel -> (z [B, T], log_det [B])."""
    t = x.shape[1]
    self.check_length(t)
    conds = self._conds(mel, t)
    h, parts, log_det = x[..., None].astype(jnp.float32), [], jnp.zeros(x.shape[:1])
    for b in range(self.num_blocks):
      h, c = flows.squeeze(h, 2), conds[b]
      for f in range(self.flows_per_block):
        h, ld_norm = self.norms[b][f].forward(h)
        h, ld_coupling = self.couplings[b][f].forward(h, _half(c, f))
        log_det = log_det + ld_norm + ld_coupling
        h = _swap(h)
      if self._split(b):
        parts.append(h[..., :h.shape[-1] // 2])
        h = h[..., h.shape[-1] // 2:]
    parts.append(h)
    n = t // self.granularity
    z = jnp.concatenate([p.reshape(p.shape[0], n, -1) for p in parts], axis=-1)
    return z.reshape(x.shape), log_det

  def inverse(self, z: jax.Array, mel: jax.Array) -> jax.Array:
    """z [B, T], mel [B, F, n_mels] -> x [B, T]."""
    t = z.shape[1]
    self.check_length(t)
    conds = self._conds(mel, t)
    n, bsz = t // self.granularity, z.shape[0]
    coarse = z.astype(jnp.float32).reshape(bsz, n, self.granularity)
    # The widths of z's parts at the coarse step, in the order forward concatenated them.
    shapes, c = [], 1
    for b in range(self.num_blocks):
      c *= 2
      if self._split(b):
        shapes.append((t // 2 ** (b + 1), c // 2))
        c //= 2
    shapes.append((t // 2 ** self.num_blocks, c))
    offsets = [0]
    for steps, ch in shapes:
      offsets.append(offsets[-1] + steps * ch // n)
    parts = [coarse[..., lo:hi].reshape(bsz, steps, ch)
             for (lo, hi), (steps, ch) in zip(zip(offsets, offsets[1:]), shapes)]
    h = parts.pop()
    for b in reversed(range(self.num_blocks)):
      if self._split(b):
        h = jnp.concatenate([parts.pop(), h], axis=-1)
      for f in reversed(range(self.flows_per_block)):
        h = _swap(h)
        h = self.couplings[b][f].inverse(h, _half(conds[b], f))
        h = self.norms[b][f].inverse(h)
      h = flows.unsqueeze(h, 2)
    return h[..., 0]


def _half(c: jax.Array, f: int) -> jax.Array:
  """The conditioning of a block's flow f: the first half of the channels for even f, the
  second for odd (the published code swaps the conditioning's halves with the audio's)."""
  half = c.shape[-1] // 2
  return c[..., :half] if f % 2 == 0 else c[..., half:]


def _swap(h: jax.Array) -> jax.Array:
  """The change of order between couplings: the two halves of the channels exchanged (its own
  inverse for an even number of channels)."""
  half = h.shape[-1] // 2
  return jnp.concatenate([h[..., half:], h[..., :half]], axis=-1)
