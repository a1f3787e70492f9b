r"""ClariNet (Ping et al. 2019): a Gaussian inverse autoregressive flow distilled from a
single-Gaussian WaveNet teacher (models/clarinet.py).

Variants:

  (none)    the paper's student: 6 flows whose networks have 10 layers of 64 channels, width 3,
            dilations 1 .. 512; the closed-form reverse KL at every step, the regularisation
            of the log scales (lambda 4) and the multi-resolution STFT loss (weight 1). Its
            teacher is `wavenet.py:mel,teacher=gaussian` (the 24 kHz Tacotron 2 mel, 30
            layers, a Gaussian over 16-bit linear audio), and it reads the same data. Batch
            32 x 9,600 samples (the teacher's), Adam 2e-4 with 1,000 warm-up steps, 200,000
            steps.
  runlocal  a laptop run on the embedded corpus (2 CPU cores), distilling
            `wavenet.py:mel,teacher=gaussian,runlocal`: 6 flows of 4 layers x 32 channels,
            batch 8 x 2,048 samples, 1,000 steps at 1e-3.

Train the teacher, then the student from it, then vocode:

  python -m experiments.train --config=experiments/configs/wavenet.py:mel,teacher=gaussian,runlocal \
      --workdir=/tmp/cn_teacher
  python -m experiments.train_distill --config=experiments/configs/clarinet.py:runlocal \
      --config.teacher_workdir=/tmp/cn_teacher --workdir=/tmp/cn
  python -m experiments.resynthesize --workdir=/tmp/cn --wav=piece.wav --out=/tmp/cn/re

Expected (runlocal, 2-core CPU, about 50 minutes with the cores shared; the teacher 17): on
the first 4 x 1 s of validation (`--eval=resynthesis`) log-mel L1 0.79, MR-STFT 3.4, magnitude
SNR 0.9 dB (the teacher's own samples: 0.97, 3.7, -0.7 dB; Griffin-Lim 0.07, 3.1, 4.7 dB); KL
0.09 nats per sample on validation, where the teacher gives the student's samples 9.59 bits
per 16-bit sample and the real audio 9.60. README.md "Distilled students" has the speed
figures.
"""

from experiments.configs import common
from experiments.configs import wavenet


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.model_name = 'clarinet'
  # hop_length, local_features, sample_rate and the teacher come from c.input and c.teacher.
  c.model = dict(flow_layers=(10,) * 6, channels=64, kernel_size=3, dilation_cycle=10,
                 log_scale_reg=4.0, stft_loss=1.0, upsample_strides=None, local_keys=('mel',),
                 dtype='float32', param_dtype='float32')
  c.total_steps = 200_000
  c.optim.learning_rate = 2e-4
  if arg.runlocal:
    common.runlocal(c, total_steps=1000, learning_rate=1e-3, evals_every=500, log_every=100,
                    microbatches=1)
    c.model.update(flow_layers=(4,) * 6, channels=32, upsample_strides=(16, 32))
  common.distillation(c, wavenet.get_config('mel,teacher=gaussian' +
                                            (',runlocal' if arg.runlocal else '')), arg.runlocal)
  return c
