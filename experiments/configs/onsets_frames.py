r"""Onsets and Frames (Hawthorne et al. 2018) as the MAESTRO paper trains it (Hawthorne et al.
2019): piano transcription from log-mel frames, labelled by MAESTRO's aligned MIDI.

Variants:

  (none)      the MAESTRO setting: 16 kHz audio, 229 HTK mel bins from 30 Hz over 2,048-sample
              windows at the dataset's 512-sample hop (31.25 frames/s), the model's paper sizes
              (models/onsets_frames.py: conv 48/48/96, fc 768, BiLSTMs of 256 per direction;
              22.6 M parameters), batch 8, Adam at 6e-4 with gradient clipping at 3 (magenta's
              defaults). It aims at the MAESTRO paper's test figures (Table 5): note F1 94.19
              and note-with-offset F1 73.68. Ours, not the paper's: whole 4.1 s segments (128
              frames) rather than examples of up to 20 s, LayerNorm in place of batch norm, no
              dropout, a cosine decay over 300k steps.
  runlocal    a laptop run on the embedded corpus (2 CPU cores): the same input, conv 8/8/16,
              fc 64, BiLSTMs of 128, batch 8 x 2 s crops (64 frames), 1,500 steps at 3e-3.
              (BiLSTMs of 32 learned no onsets in 600 steps, nor could they fit one batch in
              300: onset probabilities stayed near the label rate, so nothing was decoded;
              with 128 units the note F1 on validation was 0.13 after 600 steps, 0.49 after
              500 and 0.84 after 1,000 of 1,500.)

Labels: the 'pianoroll' (frames), 'onsets' and 'velocities' frame features (data/midi.py, the
sustain pedal applied); offsets are derived from them (`offsets_of`).

Train, score (mir_eval on every segment of a split: experiments/evaluators/transcription.py),
transcribe a wav:

  python -m experiments.train --config=experiments/configs/onsets_frames.py:runlocal \
      --workdir=/tmp/of
  python -m experiments.evaluate --workdir=/tmp/of --split=test
  python -m experiments.transcribe --workdir=/tmp/of --audio=in.wav --out=out.mid

Expected (runlocal, 2-core CPU): see the README's results table.
"""

import ml_collections

from experiments.configs import common

PAPER = dict(filters=(48, 48, 96), pools=(1, 2, 2), fc_size=768, lstm_units=256,
             dtype='float32', param_dtype='float32')


def transcription_eval(every_steps: int = 5000, split: str = 'validation', batch_size: int = 8,
                       batches: int | None = 16) -> ml_collections.ConfigDict:
  """mir_eval frame and note scores on `batches` batches of `split` (evaluate.py: all of it)."""
  entry = ml_collections.ConfigDict({
      'type': 'transcription', 'every_steps': every_steps, 'split': split,
      'batch_size': batch_size, 'batches': ml_collections.config_dict.placeholder(int),
      'onset_threshold': 0.5, 'frame_threshold': 0.5,
      'crop_samples': ml_collections.config_dict.placeholder(int)})
  entry.batches = batches  # None: all of the split
  return entry


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.model_name = 'onsets_frames'
  c.model = dict(PAPER)
  c.input.dataset = '16k'  # 16 kHz, hop 512
  c.input.encoding = 'float'
  c.input.bits = 16
  c.input.frame_features = ('mel', 'pianoroll', 'onsets', 'velocities')
  c.input.mel.update(n_fft=2048, n_mels=229, fmin=30.0, htk=True)
  c.input.batch_size = 8
  c.input.crop_samples = None  # whole segments
  c.total_steps = 300_000
  c.optim.learning_rate = 6e-4
  c.optim.warmup_steps = 1000
  c.optim.clip_norm = 3.0
  c.divergence.bits_margin = 0.0  # no bits per sample to bound
  c.evals = ml_collections.ConfigDict({'validation': transcription_eval()})
  c.sharding_rules = (('batch', 'data'), ('mlp', 'model'), ('lstm', 'model'), ('time', None),
                      ('embed', None), ('conv', None), ('keys', None))

  if arg.runlocal:
    c.input.update(manual_dir=None, batch_size=8, crop_samples=32768)
    c.model.update(filters=(8, 8, 16), fc_size=64, lstm_units=128)
    c.total_steps = 1500
    c.log_every_steps = 50
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 50
    c.evals.validation.update(every_steps=500, batches=None, batch_size=8)
    c.checkpoint.every_steps = 500
    c.checkpoint.keep_every = 0
  return c
