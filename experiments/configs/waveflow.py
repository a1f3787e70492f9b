r"""WaveFlow (Ping et al. 2020): a mel vocoder autoregressive along the height of folded audio,
trained by maximum likelihood, sampled in h passes per flow (models/waveflow.py).

Variants (combine with commas, e.g. `:data=22k,height=64`):

  (none)     the paper's small-footprint model on MAESTRO at 16 kHz (`data=16k`: 80 mels at
             the dataset's 512-sample hop, experiments/configs/common.py `mel_vocoder`):
             height 16, 8 flows of 8 dilated 2-D layers (3 x 3 taps) with 64 residual
             channels; the mel upsampled by strides 16 x 32. Batch 8 x 16,384 samples, Adam at
             2e-4 decayed by a cosine, 2,000,000 steps.
  height=    the fold height h, one of the paper's 8, 16, 32, 64 (or any divisor of the hop).
  channels=  residual channels: 64 (default, 5.91 M parameters in the paper at 22.05 kHz),
             96 or 128 (22.25 M).
  data=22k   the published setting: 22,050 Hz, 80 mels at a 256-sample hop (fmax 8 kHz, log
             floor 1e-5), upsampled by strides 16 x 16.
  runlocal   a laptop run on the embedded corpus (2 CPU cores): height 8, 4 flows of 5 layers
             of 16 channels, strides 16 x 32; batch 8 x 2,048 samples, 1,000 steps at 1e-3.

Train, evaluate, vocode a wav:

  python -m experiments.train --config=experiments/configs/waveflow.py:runlocal --workdir=/tmp/wf
  python -m experiments.evaluate --workdir=/tmp/wf --split=validation
  python -m experiments.resynthesize --workdir=/tmp/wf --wav=piece.wav --out=/tmp/wf/re

Expected (runlocal, 2-core CPU): see README.md "Flow vocoders".
"""

from experiments.configs import common


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False, data='16k', height=0, channels=0)
  c = common.base_config()
  c.model_name = 'waveflow'
  # hop_length, local_features (n_mels) and sample_rate come from c.input.
  c.model = dict(height=16, num_flows=8, channels=64, num_layers=8, kernel_size=3,
                 upsample_strides=(16, 16) if arg.data == '22k' else (16, 32),
                 local_keys=('mel',), dtype='float32', param_dtype='float32')
  c.input.batch_size = 8
  c.total_steps = 2_000_000
  c.optim.learning_rate = 2e-4
  c.optim.warmup_steps = 1000
  if arg.runlocal:
    common.runlocal(c, total_steps=1000, learning_rate=1e-3, evals_every=500, log_every=100,
                    microbatches=1)
    c.model.update(height=8, num_flows=4, channels=16, num_layers=5, upsample_strides=(16, 32))
  if arg.height:
    c.model.height = arg.height
  if arg.channels:
    c.model.channels = arg.channels
  common.mel_vocoder(c, arg.data, arg.runlocal)
  return c
