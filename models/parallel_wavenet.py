"""Parallel WaveNet (van den Oord et al. 2018): an inverse autoregressive flow of logistic
flows, distilled from a WaveNet teacher with a mixture-of-logistics output, and sampled in one
parallel pass (models/layers/distillation.py).

    z0 ~ Logistic(0, 1) [B, T] --4 flows (networks of 10, 10, 10, 30 layers, 64 channels,
    width 3, dilations 1 .. 512 repeated), each z <- z exp(s) + mu from the earlier steps of
    its input and the upsampled mel--> x [B, T]

Trained by experiments/train_distill.py on the reverse KL to the teacher, estimated from the
student's samples scored by the teacher in one parallel pass, plus the power loss. The family
contract's `init` and `loss` are the distillation module's; `generate` and the flow's
`forward` and `inverse` are the flow vocoders'.
"""

from models.layers import distillation
from models.layers import flow_vocoder

init, loss, teacher_of = distillation.init, distillation.loss, distillation.teacher_of
generate, forward, inverse = flow_vocoder.generate, flow_vocoder.forward, flow_vocoder.inverse


class Model(distillation.Student):
  """Parallel WaveNet's student; `Model(**config.model)`."""
  distribution: str = 'logistic'
  power_loss: float = 1.
