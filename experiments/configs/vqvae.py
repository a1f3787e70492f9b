r"""A hierarchy of WaveNets over learned discrete codes (models/vqvae, models/vqvae_prior):
VQ-VAE levels trained one after another, then an autoregressive prior over the top level's
codes; 16 kHz, 8-bit mu-law audio.

Variants (combine with commas, e.g. `:level=2,runlocal`):

  level=N     VQ-VAE level N (1, 2 or 3; 1 unless `prior`). Level 1 autoencodes the audio codes with hop 8;
              level 2 the level-1 codes with hop 4 (32 audio samples per code), level 3 the
              level-2 codes with hop 4 (128): Jukebox's hops. Paper size: encoders of width
              64 with 4 residual blocks (dilations 1, 3, 9, 27) after each stride-2 conv,
              codebooks of 2,048 codes of 64 dimensions (EMA decay 0.99, restarts below 1.0,
              commitment 0.25); decoders are WaveNets of 128 residual / 256 gate / 256 skip
              channels: 30 layers (3 cycles of 1..512) over audio, 20 (2 cycles) over codes.
              Batch 32 of 16,384 samples (level 1), 65,536 (level 2: 8,192 level-1 codes per
              row) and 262,144 (level 3: 8,192 level-2 codes per row). Parameters: 4.42 M at
              level 1, 4.05 M at levels 2 and 3. A code depends on 1,142 inputs at level 1
              (71 ms of audio), on 490 codes of the level below at levels 2 and 3
              (`Model.receptive_field`).
  prior       the top prior, over the top level of a `levels`-deep hierarchy (default 3): a
              Sparse Transformer of 48 layers of 512 (16 heads, strided attention with block
              128, the 152 M-parameter shape of experiments/configs/sparse_transformer.py)
              over a context of 8,192 top codes, batch 32 of whole contexts: 153.4 M
              parameters, beside 13.3 M of frozen levels in its state. Its receptive
              field: 8,192 x 128 samples = 65.5 s with 3 levels, 8,192 x 32 = 16.4 s with 2
              (the flat paper WaveNet's: 4,094 samples, 0.26 s). Its data: 65.5-s segments
              (`sr16000_seg1048576_hop512`), which the levels read too.
  prior_family=wavenet   the prior a WaveNet (40 layers, 4 cycles of 1..512, 128/256/256
              channels, 5.7 M parameters: 4,094 top codes, 32.8 s with 3 levels) in place of
              the Sparse Transformer.
  runlocal    a laptop hierarchy on the embedded corpus (2 CPU cores, 65,536-sample segments):
              encoders of width 32 with 2 residual blocks, 256 codes of 32 dimensions,
              decoders of 10 layers (32/64/64 channels, 1,025 positions); batch 8 of 2,048
              samples (level 1, 1,200 steps), 8,192 (level 2, 800 steps), 32,768 (level 3, 800
              steps). The prior: a Sparse Transformer of 4 layers of 64 over 256 top codes
              (block 16), on crops of 32,768 samples at random offsets, 600 steps: its
              receptive field is 256 x 128 samples = 2.05 s with 3 levels, 0.51 s with 2 (the
              flat runlocal WaveNet's: 1,025 samples, 0.064 s).

Train level by level, then the prior, then evaluate, sample and continue a wav (runlocal):

  python -m experiments.train_vqvae --config=experiments/configs/vqvae.py:level=1,runlocal \
      --workdir=/tmp/vq1
  python -m experiments.train_vqvae --config=experiments/configs/vqvae.py:level=2,runlocal \
      --config.below_workdir=/tmp/vq1 --workdir=/tmp/vq2
  python -m experiments.train_vqvae --config=experiments/configs/vqvae.py:level=3,runlocal \
      --config.below_workdir=/tmp/vq2 --workdir=/tmp/vq3
  python -m experiments.train_vqvae --config=experiments/configs/vqvae.py:prior,runlocal \
      --config.below_workdir=/tmp/vq3 --workdir=/tmp/vqp
  python -m experiments.evaluate --workdir=/tmp/vqp --split=test --eval=description_length
  python -m experiments.sample --workdir=/tmp/vqp --num_samples=2 --seconds=4 --out=/tmp/vqp/wav \
      --temperatures=1.0,1.0,1.0,1.0
  python -m experiments.sample --workdir=/tmp/vqp --prompt=piece.wav --prompt_seconds=2 \
      --seconds=4 --out=/tmp/vqp/continued
  python -m experiments.sample --workdir=/tmp/vq2 --prompt=piece.wav --seconds=2 \
      --out=/tmp/vq2/reconstructed      # what level 2 keeps of a wav

A 2-level hierarchy: the prior over level 2 (`:prior,levels=2,runlocal`, below_workdir the
level-2 run).

Expected (runlocal, 2-core CPU; README.md "VQ-VAE hierarchies" has the rest): training in
5.5, 2, 3.5 and 2 minutes (levels 1, 2, 3, prior); on the whole validation / test split,
codebook perplexities of 190-210 of 256, reconstruction bits per input position 3.06 / 3.22
(level 1, per audio sample), 4.68 / 4.97 (level 2, per level-1 code), 5.42 / 5.71 (level 3),
the prior 6.60 / 6.87 bits per top code; a description length of 3.86 / 4.08 bits per audio
sample (the flat runlocal WaveNet: 3.32 / 3.51), with a prior that sees 2.05 s (the WaveNet
0.064 s). The runlocal prior reads crops at random offsets: on whole segments it memorised
the corpus (2.0 bits per code in training, 11.0 on validation).
"""

import ml_collections

from experiments.configs import common
from experiments.configs import sparse_transformer

STRIDES = {1: (2, 2, 2), 2: (2, 2), 3: (2, 2)}  # relative hops 8, 4, 4: audio hops 8, 32, 128
PAPER_CROPS = {1: 16384, 2: 65536, 3: 262144}
RUNLOCAL_CROPS = {1: 2048, 2: 8192, 3: 32768}
RUNLOCAL_STEPS = {1: 1200, 2: 800, 3: 800}
DATASET = 'sr16000_seg1048576_hop512'  # 65.5-s segments: the paper prior's context
PRIOR_CONTEXT = 8192  # top codes


def _decoder(layers: int, runlocal: bool) -> dict:
  if runlocal:
    return dict(residual_channels=32, gate_channels=64, skip_channels=64, kernel_size=2,
                num_layers=10, dilation_cycle=10, local_channels=32, dtype='float32')
  return dict(residual_channels=128, gate_channels=256, skip_channels=256, kernel_size=2,
              num_layers=layers, dilation_cycle=10, local_channels=64, dtype='float32')


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, level=0, prior=False, levels=3, prior_family='sparse_transformer',
                         runlocal=False)
  if arg.prior and arg.level:
    raise ValueError(f'config arguments level={arg.level}, prior: choose a level (level=1, 2 '
                     'or 3) or the prior')
  if not arg.prior:
    arg.level = arg.level or 1
  if arg.level and arg.level not in STRIDES:
    raise ValueError(f'config argument level={arg.level}: expected 1, 2 or 3')
  if arg.levels not in (2, 3):
    raise ValueError(f'config argument levels={arg.levels}: expected 2 or 3')
  if arg.prior_family not in ('sparse_transformer', 'wavenet'):
    raise ValueError(f'config argument prior_family={arg.prior_family!r}: expected '
                     'sparse_transformer or wavenet')
  c = common.base_config()
  c.level = arg.level  # 0: the prior
  c.num_levels = arg.levels  # the levels under the prior
  # The trained run of the level below (experiments/train_vqvae.py), and the frozen levels'
  # run configs ({'level1': ..., ...}: this file's, until train_vqvae loads the trained ones).
  c.below_workdir = ml_collections.config_dict.placeholder(str)
  c.levels = ml_collections.ConfigDict()
  c.input.dataset = DATASET
  c.input.encoding = 'mu_law'
  c.input.bits = 8
  c.input.batch_size = 32
  c.total_steps = 200_000
  c.optim.learning_rate = 3e-4
  c.optim.warmup_steps = 2000

  if arg.level:
    c.model_name = 'vqvae'
    c.model = dict(strides=STRIDES[arg.level], channels=64, res_blocks=4, dilation_growth=3,
                   codebook_size=2048, code_dim=64, commitment=0.25, ema_decay=0.99,
                   restart_threshold=1.0,
                   decoder=_decoder(30 if arg.level == 1 else 20, arg.runlocal))
    c.input.crop_samples = PAPER_CROPS[arg.level]
  else:
    c.model_name = 'vqvae_prior'
    top_hop = 128 if arg.levels == 3 else 32
    if arg.prior_family == 'sparse_transformer':
      net = dict(sparse_transformer.PAPER, max_length=PRIOR_CONTEXT, block=128)
      c.sharding_rules = sparse_transformer.get_config().sharding_rules
      c.optim.b2 = 0.95
    else:
      net = dict(residual_channels=128, gate_channels=256, skip_channels=256, kernel_size=2,
                 num_layers=40, dilation_cycle=10, output='softmax', dtype='float32')
    c.model = dict(prior=arg.prior_family, prior_model=net)
    c.input.crop_samples = PRIOR_CONTEXT * top_hop
    c.evals.validation.batch_size = 8
    # Every level's bits and the prior's, on the same batches (`--eval=description_length`).
    c.evals.description_length = ml_collections.ConfigDict({
        'type': 'description_length', 'every_steps': 0, 'split': 'validation', 'batches': 8,
        'batch_size': 8, 'crop_samples': ml_collections.config_dict.placeholder(int)})

  if arg.runlocal:
    common.runlocal(c, total_steps=RUNLOCAL_STEPS.get(arg.level, 600),
                    learning_rate=3e-3 if arg.level else 1e-2, evals_every=400, log_every=100,
                    microbatches=8 if arg.level == 1 else 1)
    if arg.level:
      c.model.update(channels=32, res_blocks=2, codebook_size=256, code_dim=32)
      c.input.crop_samples = RUNLOCAL_CROPS[arg.level]
      c.evals.validation.crop_samples = max(8192, RUNLOCAL_CROPS[arg.level])
    else:
      if arg.prior_family == 'sparse_transformer':
        c.model.prior_model.update(max_length=256, block=16, summary=4, num_layers=4,
                                   embed_dim=64, num_heads=4, mlp_dim=256, remat=False)
      else:
        c.model.prior_model.update(residual_channels=32, gate_channels=64, skip_channels=64,
                                   num_layers=10)
      # Crops at random offsets, not whole segments: the encoders code every offset
      # differently, which the small corpus needs (65,536-sample segments memorise fast).
      c.input.crop_samples = 32768
      c.evals.validation.update(every_steps=100, crop_samples=None, batch_size=8)
      c.evals.sample.seconds = 2.0
      c.evals.description_length.update(batches=None, crop_samples=None)
  if arg.level:
    del c.evals['sample']  # a level reconstructs prompts; new music comes from the prior
  # The levels below as this file describes them, so that the model builds with random
  # parameters (benchmarks, memory plans); experiments/train_vqvae.py replaces them with the
  # trained runs' saved configs.
  for i in range(1, (arg.level - 1 if arg.level else arg.levels) + 1):
    run = get_config(f'level={i}' + (',runlocal' if arg.runlocal else ''))
    del run['levels']
    c.levels[f'level{i}'] = run
  return c
