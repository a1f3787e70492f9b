"""WaveFlow (Ping et al. 2020): a flow autoregressive along the height of folded audio.

    x [B, T] --fold: X[r, c] = x[c h + r]--> X [B, h, T/h]
      --num_flows x (permute the rows -> autoregressive affine flow along h)--> Z --unfold--> z

Each flow (models/layers/flows.py `AutoregressiveFlow2D`) scales and shifts row r by a 2-D
gated network of rows < r (dilated, causal along h, centred along the width) and of the
upsampled mel folded like the audio. Training is one parallel pass; sampling recovers the h
rows of each flow in turn, h sequential passes per flow and none along the width: T/h
samples come out of every pass. Between flows the rows are permuted (the paper's choice):
reversed for the first half of the flows, each half reversed for the second.

h sets the trade: h = 2 makes each flow a bipartition affine coupling of the even and the odd
samples (a WaveGlow-like flow over a squeeze of 2; h = 1 leaves nothing to condition on and
each flow an elementwise affine map of the mel), and h = T an autoregressive flow over every
sample (WaveNet-like, T passes to sample). The paper's settings are h = 8, 16, 32 and 64
with 8 flows of 8 layers and 64 to 128 residual channels (`height=16, channels=128` by
default, WaveFlow's 22.25 M-parameter model at 22.05 kHz).

The family contract's `init`, `loss` and `generate` are models/layers/flow_vocoder.py's.
"""

import jax
import jax.numpy as jnp

from models.layers import flow_vocoder
from models.layers import flows

init, loss, generate = flow_vocoder.init, flow_vocoder.loss, flow_vocoder.generate
forward, inverse = flow_vocoder.forward, flow_vocoder.inverse


class Model(flow_vocoder.MelFlow):
  """WaveFlow; `Model(**config.model)`."""
  height: int = 16
  num_flows: int = 8
  channels: int = 128
  num_layers: int = 8
  kernel_size: int = 3

  @property
  def granularity(self) -> int:
    return self.height

  @property
  def reach_samples(self) -> int:
    return self.num_flows * self.height * (self.kernel_size - 1) // 2 * (
        2 ** self.num_layers - 1)

  def permutation(self, k: int) -> tuple[int, ...]:
    """The row order flow k reads its input in."""
    h = self.height
    if k < self.num_flows // 2:
      return tuple(range(h - 1, -1, -1))
    half = h // 2
    return tuple(range(half - 1, -1, -1)) + tuple(range(h - 1, half - 1, -1))

  def setup(self):
    self.upsampler = flows.Upsampler(self.strides, self.param_dtype)
    self.flows = [flows.AutoregressiveFlow2D(self.height, self.local_features, self.channels,
                                             self.num_layers, self.kernel_size, self.dtype,
                                             self.param_dtype) for _ in range(self.num_flows)]

  def _fold(self, x: jax.Array) -> jax.Array:
    """[B, T, ...] -> [B, h, T/h, ...]: X[:, r, c] = x[:, c h + r]."""
    b, t = x.shape[:2]
    return jnp.swapaxes(x.reshape(b, t // self.height, self.height, *x.shape[2:]), 1, 2)

  def _unfold(self, x: jax.Array) -> jax.Array:
    b, h, w = x.shape[:3]
    return jnp.swapaxes(x, 1, 2).reshape(b, h * w, *x.shape[3:])

  def _conds(self, mel: jax.Array, t: int) -> list[jax.Array]:
    """The folded conditioning in the row order of each flow."""
    c, out = self._fold(self.per_sample(mel, self.upsampler, t)), []
    for k in range(self.num_flows):
      c = c[:, jnp.array(self.permutation(k))]
      out.append(c)
    return out

  def forward(self, x: jax.Array, mel: jax.Array):
    """x [B, T] float audio, mel [B, F, n_mels] log-mel -> (z [B, T], log_det [B])."""
    t = x.shape[1]
    self.check_length(t)
    conds = self._conds(mel, t)
    h, log_det = self._fold(x.astype(jnp.float32)), jnp.zeros(x.shape[:1])
    for k in range(self.num_flows):
      h, ld = self.flows[k].forward(h[:, jnp.array(self.permutation(k))], conds[k])
      log_det = log_det + ld
    return self._unfold(h), log_det

  def inverse(self, z: jax.Array, mel: jax.Array) -> jax.Array:
    """z [B, T], mel [B, F, n_mels] -> x [B, T] (h passes of the network per flow)."""
    t = z.shape[1]
    self.check_length(t)
    conds = self._conds(mel, t)
    h = self._fold(z.astype(jnp.float32))
    for k in reversed(range(self.num_flows)):
      h = self.flows[k].inverse(h, conds[k])
      h = h[:, jnp.argsort(jnp.array(self.permutation(k)))]  # the rows back in order
    return self._unfold(h)
