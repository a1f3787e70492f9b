"""WaveGlow (Prenger et al. 2018): a mel-conditioned flow, sampled in one parallel pass.

    x [B, T] --squeeze into groups of `group`--> [B, T/g, g]
      --num_flows x (invertible 1x1 conv -> affine coupling with a WN of the first half and
        the upsampled mel)-->, with `early_size` channels sent straight to z before every
        `early_every`-th flow (early outputs) --> z [B, T]

The mel frames are upsampled to one vector per sample (a transposed convolution of width
2 hop, models/layers/flows.py `Upsampler`) and squeezed like the audio, so the coupling at
group n sees the g n_mels values of its g samples. The paper's network: g = 8, 12 flows,
early outputs of 2 channels every 4 flows, WN of 8 layers, 512 residual channels and width 3
(the published code: 256 skip channels; here the residual and skip widths are one `channels`).

Trained by maximum likelihood under a standard Gaussian prior (models/layers/flow_vocoder.py:
the loss in nats and bits per 16-bit sample); sampled with z ~ N(0, sigma^2), sigma the
contract's `temperature` (the paper uses 0.6 for speech). The family contract's `init`,
`loss` and `generate` are flow_vocoder's; `forward` and `inverse` are the flow's.
"""

import jax
import jax.numpy as jnp

from models.layers import flow_vocoder
from models.layers import flows

init, loss, generate = flow_vocoder.init, flow_vocoder.loss, flow_vocoder.generate
forward, inverse = flow_vocoder.forward, flow_vocoder.inverse


class Model(flow_vocoder.MelFlow):
  """WaveGlow; `Model(**config.model)`."""
  num_flows: int = 12
  group: int = 8
  early_every: int = 4  # 0: no early outputs
  early_size: int = 2
  channels: int = 512
  num_layers: int = 8
  kernel_size: int = 3
  lu: bool = False  # LU-parameterised 1x1 convolutions

  def __post_init__(self):
    self.widths  # pylint: disable=pointless-statement  (checks the early outputs leave 2)
    super().__post_init__()

  @property
  def granularity(self) -> int:
    return self.group

  def _early(self, i: int) -> bool:
    return bool(self.early_every) and i > 0 and i % self.early_every == 0

  @property
  def widths(self) -> tuple[int, ...]:
    """The channels each flow transforms."""
    out, c = [], self.group
    for i in range(self.num_flows):
      c -= self.early_size if self._early(i) else 0
      out.append(c)
    if c < 2:
      raise ValueError(f'model: {self.num_flows} flows with early outputs of '
                       f'{self.early_size} every {self.early_every} leave {c} of {self.group} '
                       'channels; a coupling needs 2')
    return tuple(out)

  @property
  def reach_samples(self) -> int:
    return self.num_flows * self.group * (self.kernel_size - 1) // 2 * (2 ** self.num_layers - 1)

  def setup(self):
    self.upsampler = flows.Upsampler(self.strides, self.param_dtype)
    self.convs = [flows.InvertibleConv1x1(c, self.lu, seed=i, param_dtype=self.param_dtype)
                  for i, c in enumerate(self.widths)]
    self.couplings = [flows.AffineCoupling(c, self.channels, self.num_layers, self.kernel_size,
                                           self.dtype, self.param_dtype) for c in self.widths]

  def _cond(self, mel: jax.Array, t: int) -> jax.Array:
    return flows.squeeze(self.per_sample(mel, self.upsampler, t), self.group)

  def forward(self, x: jax.Array, mel: jax.Array):
    """x [B, T] float audio, mel [B, F, n_mels] log-mel -> (z [B, T], log_det [B])."""
    t = x.shape[1]
    self.check_length(t)
    cond = self._cond(mel, t)
    h = flows.squeeze(x[..., None].astype(jnp.float32), self.group)
    early, log_det = [], jnp.zeros(x.shape[:1])
    for i in range(self.num_flows):
      if self._early(i):
        early.append(h[..., :self.early_size])
        h = h[..., self.early_size:]
      h, ld_conv = self.convs[i].forward(h)
      h, ld_coupling = self.couplings[i].forward(h, cond)
      log_det = log_det + ld_conv + ld_coupling
    z = jnp.concatenate(early + [h], axis=-1)
    return flows.unsqueeze(z, self.group)[..., 0], log_det

  def inverse(self, z: jax.Array, mel: jax.Array) -> jax.Array:
    """z [B, T], mel [B, F, n_mels] -> x [B, T]."""
    t = z.shape[1]
    self.check_length(t)
    cond = self._cond(mel, t)
    h = flows.squeeze(z[..., None].astype(jnp.float32), self.group)
    n_early = sum(self._early(i) for i in range(self.num_flows))
    split = n_early * self.early_size
    early = [h[..., j * self.early_size:(j + 1) * self.early_size] for j in range(n_early)]
    h = h[..., split:]
    for i in reversed(range(self.num_flows)):
      h = self.couplings[i].inverse(h, cond)
      h = self.convs[i].inverse(h)
      if self._early(i):
        h = jnp.concatenate([early.pop(), h], axis=-1)
    return flows.unsqueeze(h, self.group)[..., 0]
