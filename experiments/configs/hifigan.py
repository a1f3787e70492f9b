r"""HiFi-GAN (Kong et al. 2020): the V1, V2 and V3 generators against the multi-period and
multi-scale discriminators, with the least-squares objective, feature matching (x 2) and the
mel L1 (x 45) (models/hifigan.py, models/layers/gan_vocoder.py), by experiments/train_gan.py.

Variants (combine with commas, e.g. `:version=v3,runlocal`):

  (none)      V1 on MAESTRO at 16 kHz (80 mels at the dataset's 512-sample hop): strides
              8, 8, 4, 2 (kernels 16, 16, 8, 4), 512 channels, type-1 residual blocks of
              kernels 3, 7, 11 and dilations 1, 3, 5; AdamW 2e-4, betas (0.8, 0.99), weight
              decay 0.01, batch 16 x 8,192 samples, 2,500,000 steps (the paper's; its
              learning rate decays by 0.999 per epoch, here it stays constant).
  version=v2  V1 with 128 channels.
  version=v3  256 channels, strides 8, 8, 8 (kernels 16, 16, 16), type-2 blocks of kernels
              3, 5, 7 and dilations (1, 2), (2, 6), (3, 12).
  data=22k    the published setting: 22,050 Hz, hop 256, strides 8, 8, 2, 2 (V3: 8, 8, 4).
  runlocal    a laptop run on the embedded corpus (2 CPU cores): the version's generator at a
              quarter of its channels, discriminators at a quarter, batch 2 x 8,192 samples
              (the paper's segments: its generator reaches 16 frames each side), 1,000 steps
              at 3e-4.

  python -m experiments.train_gan --config=experiments/configs/hifigan.py:runlocal --workdir=/tmp/hg

Expected (runlocal, 2-core CPU): see README.md "GAN vocoders".
"""

from experiments.configs import common

_VERSIONS = {  # at hop 512 (16 kHz data) and hop 256 (22 kHz)
    'v1': dict(channels=512, resblock='type1', resblock_kernels=(3, 7, 11),
               resblock_dilations=(1, 3, 5) * 3),
    'v2': dict(channels=128, resblock='type1', resblock_kernels=(3, 7, 11),
               resblock_dilations=(1, 3, 5) * 3),
    'v3': dict(channels=256, resblock='type2', resblock_kernels=(3, 5, 7),
               resblock_dilations=(1, 2, 2, 6, 3, 12)),
}
_UPSAMPLING = {('16k', False): ((8, 8, 4, 2), (16, 16, 8, 4)),
               ('22k', False): ((8, 8, 2, 2), (16, 16, 4, 4)),
               ('16k', True): ((8, 8, 8), (16, 16, 16)),
               ('22k', True): ((8, 8, 4), (16, 16, 8))}


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False, data='16k', version='v1')
  if arg.version not in _VERSIONS:
    raise ValueError(f'config argument version={arg.version!r}: expected one of '
                     f'{", ".join(_VERSIONS)}')
  c = common.base_config()
  c.model_name = 'hifigan'
  strides, kernels = _UPSAMPLING[(arg.data, arg.version == 'v3')]
  c.model = dict(upsample_strides=strides, upsample_kernels=kernels, **_VERSIONS[arg.version],
                 discriminators='mpd+msd', discriminator_width=1.0, periods=(2, 3, 5, 7, 11),
                 windows=(160, 320, 640, 1280, 2400), objective='least_squares',
                 feature_matching=2.0, gradient_penalty=0.0, mel_loss=45.0, mel_fft_sizes=(),
                 stft_loss=0.0, weight_norm=True, local_keys=('mel',), dtype='float32')
  c.total_steps = 2_500_000
  c.input.batch_size = 16
  if arg.runlocal:
    common.runlocal(c, total_steps=1000, learning_rate=3e-4, evals_every=500, log_every=100,
                    microbatches=1)
    c.input.update(batch_size=2, crop_samples=8192)  # as melgan.py:runlocal
    c.model.update(channels=c.model.channels // 4, discriminator_width=0.25)
  common.mel_vocoder(c, arg.data, arg.runlocal, temperature=1.0)
  if not arg.runlocal:
    c.input.crop_samples = 8192
  common.gan(c, learning_rate=c.optim.learning_rate if arg.runlocal else 2e-4, b1=0.8, b2=0.99)
  for optim in (c.optim, c.optim_discriminator):
    optim.update(name='adamw', weight_decay=0.01)
  return c
