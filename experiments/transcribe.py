r"""Transcribe a wav to MIDI with a trained transcriber (models/__init__.py, kind 'transcriber').

    python -m experiments.transcribe --workdir=/tmp/of --audio=in.wav --out=out.mid \
        [--step=N] [--onset_threshold=0.5] [--frame_threshold=0.5]

The wav (any rate, mixed to mono, resampled to the model's rate with soxr) gives its 'mel'
frames as the training data's are computed (config.input.mel at the dataset's hop: frame f
centred on sample f hop); the model transcribes the whole file at once and its notes (times on
the frame grid, velocities from its velocity head) are written as one piano track, first to
<out>.partial and renamed when complete. Prints the number of notes and their span. Runs in
one process.
"""

import os

from absl import app
from absl import flags

from data import midi as midi_lib
from experiments import runtime
from experiments import sample as sample_lib


def transcribe(workdir: str, audio: str, out: str | None = None, step: int | None = None,
               onset_threshold: float = 0.5, frame_threshold: float = 0.5) -> midi_lib.Notes:
  """The notes of the wav `audio` by the transcriber of `workdir` (its checkpoint `step`,
  default the latest), written to the MIDI file `out` if given.

  Raises:
    FileNotFoundError: no checkpoint; AudioError: a missing or undecodable wav;
    ValueError: the run is not a transcriber, or `out` cannot be written.
  """
  config, family, model, variables = sample_lib.load_run(
      workdir, step, 'transcribe', 'transcriber (a model with `transcribe`, e.g. onsets_frames)',
      out)
  mel = sample_lib.wav_mel(config, audio)  # [1, F, n_mels]
  notes = family.transcribe(model, variables, mel, onset_threshold, frame_threshold)[0]
  if out is not None:
    partial = f'{out}.partial'
    midi_lib.write_midi(partial, notes)
    os.replace(partial, out)
  return notes


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if f.workdir is None or f.audio is None or f.out is None:
    raise app.UsageError('--workdir, --audio and --out are required')
  with runtime.one_line_errors('transcribe'):
    notes = transcribe(f.workdir, f.audio, f.out, f.step, f.onset_threshold, f.frame_threshold)
  span = f'{notes.onsets.min():.2f}-{notes.end_time:.2f} s' if len(notes) else 'no notes'
  print(f'{f.audio}: {len(notes)} notes ({span}) -> {f.out}')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'The transcriber\'s training run.')
  flags.DEFINE_string('audio', None, 'The wav file to transcribe.')
  flags.DEFINE_string('out', None, 'The MIDI file to write.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_float('onset_threshold', 0.5, 'Onset probability that starts a note.')
  flags.DEFINE_float('frame_threshold', 0.5, 'Frame probability that keeps a note on.')
  app.run(main)
