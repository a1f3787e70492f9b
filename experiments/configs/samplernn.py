r"""SampleRNN on MAESTRO (16 kHz, 8-bit linear codes), trained by truncated BPTT.

Variants (combine with commas, e.g. `:two_tier,runlocal`):

  (none)    the paper's 3-tier music model (Mehri et al. 2017, and the settings of its
            published code): frame tiers of 8 and 2 samples over the sample-level MLP, one
            GRU layer of 1,024 per tier with learned initial states, 256-dimensional code
            embeddings, three 1,024-wide ReLU layers, 256 linear levels; truncated BPTT over
            subsequences of 512 samples of 8-second crops (128,000 samples: 8 of context, 250
            subsequences, the last padded), batch 128, Adam 1e-3, gradients clipped at norm 1;
            21.9 M parameters. Its cached sampler: 1,198 samples/s for one stream on 2 CPU
            cores (0.075 x real time), 9,284 in all for 16.
  two_tier  the paper's 2-tier model: one frame tier of 16 samples (3 GRU layers of 1,024)
            over the MLP reading the last 16 codes.
  lstm      LSTM cells in place of GRUs.
  mu_law    8-bit mu-law codes in place of linear ones.
  runlocal  a laptop run on the embedded corpus (2 CPU cores): the 3-tier model at width 128
            (embeddings 32), subsequences of 512 over crops of 2,048 + 8 samples, batch 8,
            1,200 steps.

Train, evaluate, sample, stream:

  python -m experiments.train --config=experiments/configs/samplernn.py:runlocal --workdir=/tmp/srnn
  python -m experiments.evaluate --workdir=/tmp/srnn --split=validation
  python -m experiments.sample --workdir=/tmp/srnn --num_samples=1 --seconds=2 --out=/tmp/srnn/wav
  python -m experiments.stream --workdir=/tmp/srnn --port=8000

A crop's first 8 samples are its context (the top tier's first input frame), so bits per
sample are over the rest; see models/samplernn/__init__.py.

Expected (mu_law,runlocal, 2-core CPU, 1,200 steps in about 7 minutes; 0.38 M parameters):
3.23 bits per sample on the whole validation split and 3.41 on test (WaveNet runlocal: 3.32,
3.51); the sampler at 73,000 samples/s for one stream (4.6 x real time).
"""

from experiments.configs import common


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False, two_tier=False, lstm=False, mu_law=False)
  c = common.base_config()
  c.model_name = 'samplernn'
  # num_classes (2^input.bits) and encoding come from c.input.
  c.model = dict(frame_sizes=(8, 2), dim=1024, rnn='gru', rnn_layers=1, embed_dim=256,
                 mlp_layers=3, tbptt_samples=512, param_dtype='float32')
  c.input.dataset = '16k'
  c.input.encoding = 'linear'
  c.input.bits = 8
  c.input.batch_size = 128
  c.input.crop_samples = 128_000  # 8 s
  c.total_steps = 100_000
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 0
  c.optim.decay = 'constant'
  c.evals.validation.crop_samples = 16_000 + 8

  if arg.two_tier:
    c.model.update(frame_sizes=(16,), rnn_layers=3)
  if arg.lstm:
    c.model.rnn = 'lstm'
  if arg.mu_law:
    c.input.encoding = 'mu_law'

  if arg.runlocal:
    common.runlocal(c, total_steps=1200, learning_rate=3e-3, evals_every=400, log_every=100,
                    microbatches=1)
    c.input.crop_samples = 2048 + 8
    c.evals.validation.crop_samples = 8192 + 8
    c.model.update(dim=128, embed_dim=32)
  return c
