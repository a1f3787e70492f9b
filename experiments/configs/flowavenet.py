r"""FloWaveNet (Kim et al. 2019): a multi-scale mel vocoder trained by maximum likelihood,
sampled in one parallel pass (models/flowavenet.py).

Variants (combine with commas, e.g. `:data=22k`):

  (none)    the paper's network on MAESTRO at 16 kHz (`data=16k`: 80 mels at the dataset's
            512-sample hop, experiments/configs/common.py `mel_vocoder`): 8 blocks of squeeze
            x 2 then 6 flows of ActNorm, an affine coupling (a 2-layer WN of 256 channels,
            width 3) and a change of order, half the channels split off after block 4; the
            mel upsampled by strides 16 x 32. Batch 8 x 16,384 samples, Adam at 1e-3 (the
            published code's) decayed by a cosine, 800,000 steps.
  data=22k  the published setting: 22,050 Hz, 80 mels at a 256-sample hop (fmax 8 kHz, log
            floor 1e-5), upsampled by strides 16 x 16.
  runlocal  a laptop run on the embedded corpus (2 CPU cores): 4 blocks of 3 flows, a split
            after block 2, 2-layer WNs of 32 channels, strides 16 x 32; batch 8 x 2,048
            samples, 1,000 steps at 1e-3.

Train, evaluate, vocode a wav:

  python -m experiments.train --config=experiments/configs/flowavenet.py:runlocal \
      --workdir=/tmp/fw
  python -m experiments.evaluate --workdir=/tmp/fw --split=validation
  python -m experiments.resynthesize --workdir=/tmp/fw --wav=piece.wav --out=/tmp/fw/re

Expected (runlocal, 2-core CPU): see README.md "Flow vocoders".
"""

from experiments.configs import common


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False, data='16k')
  c = common.base_config()
  c.model_name = 'flowavenet'
  # hop_length, local_features (n_mels) and sample_rate come from c.input.
  c.model = dict(num_blocks=8, flows_per_block=6, channels=256, num_layers=2, kernel_size=3,
                 split_every=4, upsample_strides=(16, 16) if arg.data == '22k' else (16, 32),
                 local_keys=('mel',), dtype='float32', param_dtype='float32')
  c.input.batch_size = 8
  c.total_steps = 800_000
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 1000
  if arg.runlocal:
    common.runlocal(c, total_steps=1000, learning_rate=1e-3, evals_every=500, log_every=100,
                    microbatches=1)
    c.model.update(num_blocks=4, flows_per_block=3, channels=32, split_every=2,
                   upsample_strides=(16, 32))
  common.mel_vocoder(c, arg.data, arg.runlocal)
  return c
