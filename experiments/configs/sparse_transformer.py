r"""Sparse Transformer (Child et al. 2019) on MAESTRO: the paper's raw-audio setting.

Variants (combine with commas, e.g. `:runlocal,attention=dense`):

  (none)      the paper's classical-music setting: 12 kHz, 8-bit mu-law, a context of 65,536
              samples (5.5 s: the dataset's segments, so each segment is one window), strided
              attention with block 256 = sqrt(65,536), rematerialised blocks. 48 layers of
              width 512, 16 heads of 32, MLP 2,048: 151.6 M parameters. Why this size: the
              paper trains its audio models at 152 M parameters with the strided pattern but
              lists no dimensions for them; 48 x 512 with 16 heads is the shape it gives its
              152 M strided ImageNet-64 model, and reproduces that count. Batch 32 of whole
              segments; per sequence, remat keeps 6.4 GB of block inputs (float32) and the
              block being recomputed needs about 6.5 GB more (XLA attention path; measured
              from compiled memory analyses of 1 and 2 layers). So 8 devices of 80 GB at 4
              sequences each, about 55 GB with parameters and Adam state; fewer devices need
              `bf16` (half the saved inputs; cuDNN attention on GPU) or a `model` mesh axis.
              (experiments/benchmark.py --what=memory compiles on CPU, where remat saves
              nothing: identical temporaries with and without it; it reports 1,280 GiB.)
  bf16        activations, matmuls and the sampler's caches in bfloat16 (parameters, norms,
              softmax, logits and the loss stay float32).
  attention=  'strided' (default: 'local' + 'strided', the paper's pattern for audio), 'fixed'
              (its text pattern: 'block' + 'summary') or 'dense' (the O(T^2) baseline; short
              contexts only).
  combine=    'heads' (default: half the heads of every layer attend with each pattern),
              'interleave' (layers alternate the patterns) or 'merged' (one softmax over their
              union). Measured on runlocal at equal wall time: heads 3.16 bits/sample,
              interleave 3.31, merged 3.33 (its layers cost 1.5x).
  positions=  'rope' (default: rotary embeddings on queries and keys, relative positions) or
              'factorized' (the paper's learned row + column embeddings). Measured on
              runlocal (interleave): 3.31 against 4.04 bits/sample.
  runlocal    a laptop run on the embedded corpus (2 CPU cores), on the 16 kHz data of
              WaveNet's runlocal so that bits per sample compare: context 2,048 (block 64),
              4 layers of width 64, 4 heads, MLP 256 (0.23 M parameters), batch 8 x 2,048
              samples in 4 microbatches, 400 steps (about 3.5 minutes on 2 cores).

(The runlocal figures above: validation bits/sample on 16 crops of 8,192 samples after 350
steps at learning rate 1e-2, from the same cached batches.)

Train, evaluate (whole segments: windows of the context sliding by half of it), sample:

  python -m experiments.train --config=experiments/configs/sparse_transformer.py:runlocal \
      --workdir=/tmp/st
  python -m experiments.evaluate --workdir=/tmp/st --split=validation
  python -m experiments.sample --workdir=/tmp/st --num_samples=1 --seconds=2 --out=/tmp/st/wav

Expected (runlocal, 2-core CPU, 3 min 25 s of training): 3.26 bits per sample on the whole
validation split and 3.42 on test, against mu-law marginal entropies of 7.5 bits (WaveNet's
runlocal: 3.32 and 3.51).
"""

from experiments.configs import common

# The paper's audio model keeps 152 M parameters at every context; only the block (~sqrt of
# the context) changes with it.
PAPER = dict(max_length=65536, num_layers=48, embed_dim=512, num_heads=16,
             mlp_dim=2048, block=256, summary=8, attention='strided', combine='heads',
             positions='rope', remat=True, attention_impl='auto', dtype='float32',
             param_dtype='float32')


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False, bf16=False, attention='strided', combine='heads',
                         positions='rope')
  c = common.base_config()
  c.model_name = 'sparse_transformer'
  c.model = dict(PAPER, attention=arg.attention, combine=arg.combine, positions=arg.positions)
  c.input.dataset = 'sr12000_seg65536_hop256'  # 12 kHz, 65,536-sample segments (hop unused)
  c.input.encoding = 'mu_law'
  c.input.bits = 8
  c.input.batch_size = 32
  c.input.crop_samples = 65536
  c.total_steps = 200_000
  c.optim.learning_rate = 3e-4
  c.optim.warmup_steps = 5000
  c.optim.b2 = 0.95  # transformer practice: faster-adapting second moments, fewer loss spikes
  c.mesh = {'data': -1, 'model': 1}
  # Heads and MLP channels split over `model`; everything else replicated but the batch.
  c.sharding_rules = (('batch', 'data'), ('heads', 'model'), ('mlp', 'model'), ('time', None),
                      ('embed', None), ('kv', None), ('vocab', None))
  c.evals.validation.batch_size = 8  # whole segments: one 65,536-sample window each

  if arg.bf16:
    c.model.dtype = 'bfloat16'

  if arg.runlocal:
    common.runlocal(c, total_steps=400, learning_rate=1e-2, evals_every=200, log_every=50,
                    microbatches=4)  # 4: 1.5x the throughput of whole batches on 2 cores
    c.model.update(max_length=2048, block=64, summary=4, num_layers=4, embed_dim=64,
                   num_heads=4, mlp_dim=256, remat=False)
  return c


def sweep() -> list[dict]:
  """Learning rate x block length of the paper config (overrides as `--config.<key>=`)."""
  return [{'optim.learning_rate': lr, 'model.block': block}
          for lr in (1e-4, 3e-4, 6e-4) for block in (128, 256, 512)]
