r"""Music Transformer (Huang et al. 2019) over MAESTRO's performance events.

Variants (combine with commas):

  (none)      the paper's MAESTRO setting: windows of 2,048 events of MAESTRO's official splits
              with its augmentation (transpositions of up to +-3 semitones, time stretches of
              +-2.5% and +-5%), relative attention. The sizes are those of the paper's MAESTRO
              model as Magenta released its hyperparameters (score2perf,
              `t_rel_len2048_h384_att512_fs1024_n6_dropout10`): 6 layers of width 384, 8 heads
              over 512 attention channels, filter (MLP) 1,024, relative distances clipped at
              1,024 (half the window: 1,025 vectors). 12.9 M parameters. It aims at the paper's
              1.84 nats per event on MAESTRO validation (its MAESTRO results table). Ours, not the paper's: no
              dropout (it used 0.1), Adam at 3e-4 with a cosine decay over 250k steps, batch 16
              windows.
  runlocal    a laptop run on the embedded corpus (2 CPU cores): windows of 256 events, 4
              layers of width 128, 4 heads, MLP 512, relative distances up to 256, batch 16,
              300 steps at 3e-3 (the corpus's 24 training pieces hold 10,334 events: longer
              runs, narrower models and windows of 512 all scored worse on validation).

Train, evaluate (NLL per event on every piece of the split, in consecutive windows), sample
(the events rendered with the corpus's piano, their MIDI beside the wav):

  python -m experiments.train --config=experiments/configs/music_transformer.py:runlocal \
      --workdir=/tmp/mt
  python -m experiments.evaluate --workdir=/tmp/mt --split=validation
  python -m experiments.sample --workdir=/tmp/mt --num_samples=2 --seconds=10 --out=/tmp/mt/wav

Expected (runlocal, 2-core CPU): see the README's results table.
"""

from data import specs
from experiments.configs import common

PAPER = dict(max_length=2048, max_distance=1025, num_layers=6, embed_dim=384, num_heads=8,
             attention_dim=512, mlp_dim=1024, dtype='float32', param_dtype='float32')


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.model_name = 'music_transformer'
  c.model = dict(PAPER)
  c.input = specs.events_input_config()
  c.input.update(window=2048, batch_size=16, augment=True)
  c.total_steps = 250_000
  c.optim.learning_rate = 3e-4
  c.optim.warmup_steps = 4000
  c.optim.b2 = 0.98
  c.mesh = {'data': -1, 'model': 1}
  c.sharding_rules = (('batch', 'data'), ('heads', 'model'), ('mlp', 'model'), ('time', None),
                      ('embed', None), ('kv', None), ('vocab', None))
  c.evals.validation.update(batch_size=16, batches=8)
  c.evals.sample.update(seconds=10.0)

  if arg.runlocal:
    c.input.update(window=256, batch_size=16)
    c.model.update(max_length=1024, max_distance=256, num_layers=4, embed_dim=128, num_heads=4,
                   attention_dim=0, mlp_dim=512)
    c.total_steps = 300
    c.log_every_steps = 50
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 50
    c.evals.validation.update(every_steps=150, batches=None, batch_size=16)
    c.evals.sample.update(every_steps=300, seconds=4.0)
    c.checkpoint.every_steps = 150
    c.checkpoint.keep_every = 0
  return c
