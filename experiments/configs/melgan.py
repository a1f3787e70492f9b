r"""MelGAN (Kumar et al. 2019): a feed-forward mel vocoder trained adversarially
(models/melgan.py), by experiments/train_gan.py.

Variants (combine with commas, e.g. `:discriminators=rwd,runlocal`):

  (none)          the paper's MelGAN on MAESTRO at 16 kHz (80 mels at the dataset's 512-sample
                  hop, experiments/configs/common.py `mel_vocoder`): generator of 512 channels
                  upsampled by 8, 8, 4, 2 with 3 residual blocks per stage (4.5 M parameters);
                  multi-scale discriminator (3 x 16.9 M); hinge loss, feature matching x 10;
                  Adam 1e-4, betas (0.5, 0.9), batch 16 x 8,192 samples, 500,000 steps.
  data=22k        the published setting: 22,050 Hz, hop 256, generator strides 8, 8, 2, 2.
  discriminators=rwd      GAN-TTS's random-window ensemble instead (windows of 10 to 150 ms:
                          160 ... 2,400 samples at 16 kHz, unconditional and mel-conditional).
  discriminators=mpd+msd  HiFi-GAN's multi-period discriminator beside the multi-scale one,
                          with HiFi-GAN's losses: least squares, feature matching x 2, mel L1
                          x 45 (the HiFi-GAN generators: experiments/configs/hifigan.py).
  runlocal        a laptop run on the embedded corpus (2 CPU cores): generator of 128
                  channels, discriminators at a quarter of the channels, batch 2 x 8,192
                  samples (the papers' segments; shorter crops than the generator's reach
                  train it on padding), 1,000 steps at 3e-4; the mel L1 (x 45) beside the
                  adversarial losses, as HiFi-GAN adds it, so that a thousand steps learn the
                  spectrum.

Train, evaluate against Griffin-Lim, vocode a wav:

  python -m experiments.train_gan --config=experiments/configs/melgan.py:runlocal --workdir=/tmp/mg
  python -m experiments.evaluate --workdir=/tmp/mg --eval=resynthesis
  python -m experiments.sample --workdir=/tmp/mg --mel_from=piece.wav --out=/tmp/mg/out

Expected (runlocal, 2-core CPU): see README.md "GAN vocoders".
"""

from experiments.configs import common

_WINDOWS_16K = (160, 320, 640, 1280, 2400)  # GAN-TTS's 240 ... 3,600 at 24 kHz, in time


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False, data='16k', discriminators='msd')
  c = common.base_config()
  c.model_name = 'melgan'
  # hop_length, local_features, sample_rate and mel_settings come from c.input.
  c.model = dict(upsample_strides=None, channels=512, residual_layers=3,
                 discriminators=arg.discriminators, discriminator_width=1.0,
                 periods=(2, 3, 5, 7, 11), windows=_WINDOWS_16K, objective='hinge',
                 feature_matching=10.0, gradient_penalty=0.0, mel_loss=0.0, mel_fft_sizes=(),
                 stft_loss=0.0, weight_norm=True, local_keys=('mel',), dtype='float32')
  if arg.discriminators == 'mpd+msd':
    c.model.update(objective='least_squares', feature_matching=2.0, mel_loss=45.0)
  c.total_steps = 500_000
  c.input.batch_size = 16
  if arg.runlocal:
    common.runlocal(c, total_steps=1000, learning_rate=3e-4, evals_every=500, log_every=100,
                    microbatches=1)
    # The papers' 8,192-sample segments (16 frames: the generator's reach is 8 frames each
    # side), as many samples per step as the shared runlocal batch.
    c.input.update(batch_size=2, crop_samples=8192)
    c.model.update(channels=128, discriminator_width=0.25, mel_loss=45.0)
  common.mel_vocoder(c, arg.data, arg.runlocal, temperature=1.0)
  if not arg.runlocal:
    c.input.crop_samples = 8192
  if arg.data == '22k':
    c.model.upsample_strides = (8, 8, 2, 2)
    c.model.windows = (240, 480, 960, 1920, 3600)
  common.gan(c, learning_rate=c.optim.learning_rate if arg.runlocal else 1e-4, b1=0.5, b2=0.9)
  return c
