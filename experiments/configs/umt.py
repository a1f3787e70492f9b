r"""The Universal Music Translation Network (models/umt) on the multi-instrument dataset
(input.instruments: every score played by each of data.specs.INSTRUMENTS), 16 kHz, 8-bit mu-law.

Variants (combine with commas):

  (none)    the paper's setting: the shared encoder 3 blocks x 10 layers of 128 channels, kernel
            3, non-causal (receptive field 6,141 samples, 0.38 s), a 64-dimensional latent per
            512-sample frame (the dataset's hop; the paper pools 800 samples, 50 ms); per
            instrument a WaveNet decoder of 4 blocks of 10 layers (dilations 1..512, receptive
            field 4,094 samples), 128 residual / 256 gate / 128 skip channels, kernel 2, the
            latent through 64 conditioning channels; the domain-confusion network 3 layers of
            100 channels (1x1 over frames, ELU, as the published code), lambda 1e-2 through
            gradient reversal; pitch modulation of the encoder's input by -0.5..0.5 semitones
            over windows of 0.25-0.5 s. Adam at 1e-3, cosine decay to 0.02 x by step 200,000
            (the paper decays by 0.98 per epoch, which optim.py does not offer: 200 epochs of
            1,000 steps would end at 0.018 x), global-norm clipping at 1. Batch 32 x 8,192
            samples (16 frames; an assumption, not the paper's). 25.7 M parameters (measured):
            encoder 1.98 M, confusion 0.027 M, 5 decoders of 4.73 M.
  runlocal  a laptop run on the embedded multi-instrument corpus (2 CPU cores): encoder 1 x 6
            layers of 32 channels (receptive field 129 samples), latent 16, decoders of 10
            layers (receptive field 1,025) with 32 residual / 64 gate / 64 skip channels, 16
            conditioning channels, the confusion network as in the paper; batch 8 x 4,096
            samples (8 frames) in 4 microbatches, Adam 3e-3, 1,200 steps. 0.65 M parameters
            (measured): encoder 0.026 M, confusion 0.022 M, 5 decoders of 0.121 M.

Train, then translate:

  python -m experiments.train --config=experiments/configs/umt.py:runlocal --workdir=/tmp/umt
  python -m experiments.translate --workdir=/tmp/umt --audio=in.wav --to=harpsichord \
      --out=/tmp/umt/harpsichord.wav
  python -m experiments.evaluate --workdir=/tmp/umt --split=test --eval=translation

No `samples` evaluation: the UMT draws audio only from a source (`generate` raises); the
`translation` evaluator (experiments/evaluators/translation.py) scores translations of the
test scores against the target instruments' renderings, on demand (every_steps 0: its
sampler draws every pair of instruments).

Expected (runlocal, measured on 2 cores shared with other jobs: 7 minutes, 2-4 steps/s, the
corpus built on first use in another minute): validation 4.03 bits per sample (8-bit mu-law
codes) at step 1,200 (4.61 at 400, 4.13 at 800), confusion_ce 1.61 (log 5: chance) and
confusion_accuracy at chance from the first steps. What the latent carries at this size: the
decoders' validation bits with each row's own latent 3.68, with another row's 3.86, with zeros
5.14 (a little of the crop, mostly a constant); a nearest-class-mean classifier of the
instrument from the latent's mean and deviation over each crop, 22% (chance; 67% on the
untrained encoder's latent, 89% on the audio's log spectrum; the confusion network alone,
trained on the untrained encoder's latents, 84%). A run with confusion_weight=0 ends at chance
too (4.47 bits at step 600): at this size the latent sheds the instrument without the
adversary, so runlocal does not show the game at work. Without the tanh on the latent (models/umt) the confusion CE ran to 2,000 and the
gradient norm to 2e5 in the first 300 steps (4.17 bits at 1,200).
"""

from data import specs
from experiments.configs import common


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.model_name = 'umt'
  # num_classes, sample_rate and hop_length (the latent's pooling) come from c.input.
  c.model = dict(
      num_domains=len(specs.INSTRUMENTS), encoder_blocks=3, encoder_layers=10,
      encoder_channels=128, encoder_kernel=3, latent_dim=64, confusion_layers=3,
      confusion_channels=100, confusion_kernel=1, confusion_weight=1e-2, pitch_semitones=0.5,
      pitch_seconds=(0.25, 0.5),
      decoder=dict(residual_channels=128, gate_channels=256, skip_channels=128, kernel_size=2,
                   num_layers=40, dilation_cycle=10, local_channels=64),
      dtype='float32', param_dtype='float32')
  c.input.dataset = '16k'
  c.input.encoding = 'mu_law'
  c.input.bits = 8
  c.input.instruments = True
  c.input.batch_size = 32
  c.input.crop_samples = 8192  # 16 frames of the 512-sample hop
  c.total_steps = 200_000
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 1000
  c.optim.decay = 'cosine'
  c.optim.end_factor = 0.02
  # The decoders' stacked 'domain' axis stays whole on every device.
  c.sharding_rules = c.sharding_rules + (('domain', None),)
  c.evals.translation = dict(type='translation', every_steps=0, split='test', seconds=2.0,
                             scores=None, batch_size=16, temperature=1.0, classifier_steps=500,
                             transcriber=None)

  if arg.runlocal:
    common.runlocal(c, total_steps=1200, learning_rate=3e-3, evals_every=400, log_every=100,
                    microbatches=4)
    c.input.crop_samples = 4096  # 8 frames
    c.model.update(encoder_blocks=1, encoder_layers=6, encoder_channels=32, latent_dim=16)
    c.model.decoder.update(residual_channels=32, gate_channels=64, skip_channels=64,
                           num_layers=10, local_channels=16)
    c.evals.translation.update(seconds=1.0, scores=2, batch_size=8, classifier_steps=200)
  del c.evals['sample']  # `generate` raises: the UMT translates
  return c
