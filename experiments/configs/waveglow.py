r"""WaveGlow (Prenger et al. 2018): a mel vocoder trained by maximum likelihood, sampled in one
parallel pass (models/waveglow.py).

Variants (combine with commas, e.g. `:data=22k`):

  (none)    the paper's network on MAESTRO at 16 kHz (`data=16k`: 80 mels at the dataset's
            512-sample hop, experiments/configs/common.py `mel_vocoder`): squeeze 8, 12 flows
            of an invertible 1x1 convolution and an affine coupling, early outputs of 2
            channels every 4 flows, couplings' WN of 8 layers x 512 channels, width 3; the
            mel upsampled by one transposed convolution of stride 512. Batch 24 x 16,384
            samples, Adam at a constant 1e-4 (the paper's), 580,000 steps. 87.6 M parameters
            (the paper: 87.9 M at hop 256).
  data=22k  the published setting: 22,050 Hz, 80 mels of 1,024-sample windows at a 256-sample
            hop (fmax 8 kHz, log floor 1e-5): upsampling of stride 256, 87.7 M parameters.
  runlocal  a laptop run on the embedded corpus (2 CPU cores): 8 flows, early outputs of 2
            every 4, WN of 4 layers x 32 channels, mel upsampled by strides 16 x 32; batch
            8 x 2,048 samples, 1,000 steps at 1e-3.

Train, evaluate, vocode a wav:

  python -m experiments.train --config=experiments/configs/waveglow.py:runlocal --workdir=/tmp/wg
  python -m experiments.evaluate --workdir=/tmp/wg --split=validation
  python -m experiments.resynthesize --workdir=/tmp/wg --wav=piece.wav --out=/tmp/wg/re

Expected (runlocal, 2-core CPU): see README.md "Flow vocoders".
"""

from experiments.configs import common


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False, data='16k')
  c = common.base_config()
  c.model_name = 'waveglow'
  # hop_length, local_features (n_mels) and sample_rate come from c.input.
  c.model = dict(num_flows=12, group=8, early_every=4, early_size=2, channels=256,
                 num_layers=8, kernel_size=3, lu=False, upsample_strides=None,
                 local_keys=('mel',), dtype='float32', param_dtype='float32')
  c.input.batch_size = 24
  c.total_steps = 580_000
  c.optim.learning_rate = 1e-4
  c.optim.decay = 'constant'
  c.optim.warmup_steps = 1000
  if arg.runlocal:
    common.runlocal(c, total_steps=1000, learning_rate=1e-3, evals_every=500, log_every=100,
                    microbatches=1)
    c.model.update(num_flows=8, channels=32, num_layers=4, upsample_strides=(16, 32))
  common.mel_vocoder(c, arg.data, arg.runlocal)
  return c
