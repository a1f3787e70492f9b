"""ClariNet (Ping et al. 2019): a Gaussian inverse autoregressive flow, distilled from a WaveNet
teacher with a single Gaussian output, and sampled in one parallel pass
(models/layers/distillation.py).

    z0 ~ N(0, 1) [B, T] --6 flows (networks of 10 layers, 64 channels, width 3), each
    z <- z exp(s) + mu from the earlier steps of its input and the upsampled mel--> x [B, T]

Trained by experiments/train_distill.py on the closed-form KL to the teacher at every step,
the regularisation of the log scales (lambda = 4) and the multi-resolution STFT loss. The
family contract's `init` and `loss` are the distillation module's; `generate` and the flow's
`forward` and `inverse` are the flow vocoders'.
"""

from models.layers import distillation
from models.layers import flow_vocoder

init, loss, teacher_of = distillation.init, distillation.loss, distillation.teacher_of
generate, forward, inverse = flow_vocoder.generate, flow_vocoder.forward, flow_vocoder.inverse


class Model(distillation.Student):
  """ClariNet's student; `Model(**config.model)`."""
  distribution: str = 'gaussian'
  flow_layers: tuple[int, ...] = (10, 10, 10, 10, 10, 10)
  log_scale_reg: float = 4.
  stft_loss: float = 1.
