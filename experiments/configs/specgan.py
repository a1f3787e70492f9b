r"""SpecGAN (Donahue et al. 2019): WaveGAN's game on normalised log-magnitude spectrograms of
1.024-second clips, rendered by Griffin-Lim (models/specgan.py), by experiments/train_gan.py.

Variants:

  (none)    the paper's SpecGAN on MAESTRO at 16 kHz: 128 x 128 spectrograms (256-sample
            windows, hop 128), d = 64, latent 100, WGAN-GP (lambda 10), 5 critic steps per
            generator step on batches of 64, Adam 1e-4, betas (0.5, 0.9), 16 Griffin-Lim
            iterations; 200,000 generator steps. 19.07 M generator and 17.43 M critic
            parameters.
  runlocal  a laptop run on the embedded corpus (2 CPU cores): d = 8, batches of 8 in 2
            critic steps of 4, 1,000 steps at 1e-4; the `clip_statistics` evaluator every 500.

  python -m experiments.train_gan --config=experiments/configs/specgan.py:runlocal --workdir=/tmp/sg

Expected (runlocal, 2-core CPU): see README.md "Unconditional GANs".
"""

from experiments.configs import common


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.model_name = 'specgan'
  c.model = dict(clip_samples=16384, latent_dim=100, dim=64, layers=5, griffin_lim_iters=16,
                 objective='wasserstein', gradient_penalty=10.0, feature_matching=0.0)
  c.total_steps = 200_000
  c.checkpoint.every_steps = 5000
  c.evals.sample.every_steps = 5000
  if arg.runlocal:
    common.runlocal(c, total_steps=1000, learning_rate=1e-4, evals_every=500, log_every=100,
                    microbatches=1)
    c.model.dim = 8
  common.clip_gan(c, arg.runlocal)
  return c
