r"""Parallel WaveNet (van den Oord et al. 2018): a logistic inverse autoregressive flow
distilled from a mixture-of-logistics WaveNet teacher (models/parallel_wavenet.py).

Variants:

  (none)    the paper's student: 4 flows whose networks have 10, 10, 10 and 30 layers of 64
            channels, width 3, dilations 1 .. 512 repeated; the reverse KL estimated from 4
            draws per step, plus the power loss (weight 1). Its teacher is
            `wavenet.py:mel,teacher=mixture` (the 24 kHz Tacotron 2 mel, 30 layers, 10
            logistics over 16-bit linear audio), and it reads the same data. Batch 32 x
            9,600 samples (the teacher's), Adam 2e-4 with 1,000 warm-up steps, 200,000 steps.
  runlocal  a laptop run on the embedded corpus (2 CPU cores), distilling
            `wavenet.py:mel,teacher=mixture,runlocal`: 4 flows of 4, 4, 4 and 6 layers x 32
            channels, batch 8 x 2,048 samples, 1,000 steps at 1e-3.

Train the teacher, then the student from it, then vocode:

  python -m experiments.train --config=experiments/configs/wavenet.py:mel,teacher=mixture,runlocal \
      --workdir=/tmp/pw_teacher
  python -m experiments.train_distill --config=experiments/configs/parallel_wavenet.py:runlocal \
      --config.teacher_workdir=/tmp/pw_teacher --workdir=/tmp/pw
  python -m experiments.resynthesize --workdir=/tmp/pw --wav=piece.wav --out=/tmp/pw/re

Expected (runlocal, 2-core CPU, about 50 minutes with the cores shared; the teacher 15): on
the first 4 x 1 s of validation (`--eval=resynthesis`) log-mel L1 0.60, MR-STFT 3.0, magnitude
SNR 0.9 dB (the teacher's own samples: 2.05, 5.5, -3.4 dB; Griffin-Lim 0.07, 3.1, 4.7 dB); KL
0.66 nats per sample on validation, where the teacher gives the student's samples 9.4 bits per
16-bit sample and the real audio 9.9. README.md "Distilled students" has the speed figures.
"""

from experiments.configs import common
from experiments.configs import wavenet


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.model_name = 'parallel_wavenet'
  # hop_length, local_features, sample_rate and the teacher come from c.input and c.teacher.
  c.model = dict(flow_layers=(10, 10, 10, 30), channels=64, kernel_size=3, dilation_cycle=10,
                 kl_samples=4, power_loss=1.0, upsample_strides=None, local_keys=('mel',),
                 dtype='float32', param_dtype='float32')
  c.total_steps = 200_000
  c.optim.learning_rate = 2e-4
  if arg.runlocal:
    common.runlocal(c, total_steps=1000, learning_rate=1e-3, evals_every=500, log_every=100,
                    microbatches=1)
    c.model.update(flow_layers=(4, 4, 4, 6), channels=32, upsample_strides=(16, 32))
  common.distillation(c, wavenet.get_config('mel,teacher=mixture' +
                                            (',runlocal' if arg.runlocal else '')), arg.runlocal)
  return c
