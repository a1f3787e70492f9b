"""MAESTRO's MIDI (or the embedded corpus's) as a TFDS dataset of whole performances: the data
of a model over performance events (data/midi_events.py, models/music_transformer.py).

The builder reads the same `manual_dir` as the audio dataset (data/maestro.py: the CSV beside
the year folders) and writes the CSV's official train/validation/test splits. An example is
one piece's notes after the sustain pedal (data/midi.py), as parallel arrays:

    onsets_us, offsets_us [N] int64  microseconds from the start of the file (exact in the
                                     records, where a float64 would be stored as a float32)
    pitches, velocities   [N] int32  MIDI keys, velocities 1..127
    midi_filename, canonical_composer, canonical_title (text), year (int32), duration
    (float32, the CSV's piece duration in seconds)

Notes rather than events, because the Music Transformer's augmentation stretches time before
the 10-ms quantisation: readers encode them (`midi_events.encode`, after
`midi_events.random_augment` in training). The audio is neither read nor checked.

Bad input follows the audio dataset's policy: the CSV must read and have its columns; a row is
bad when a value does not parse, its paths leave `manual_dir`, or it repeats an earlier row; a
piece is bad when its MIDI file is missing, does not parse or holds no notes. `on_bad_file`
'fail' (default) stops with one line naming the file and the fault; 'skip' leaves the piece
out and lists it in `bad_files.json` in the dataset directory. A split left without pieces stops
the preparation with one line. `prepare` builds under the audio dataset's lock, removes the
directories of killed preparations first, records the source and checks it on later use
(data/maestro.py: `prepare_builder`).
"""

import dataclasses
import json
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from data import maestro
from data import midi as midi_lib

NOTE_FIELDS = ('onsets_us', 'offsets_us', 'pitches', 'velocities')


def piece_example(manual_dir: str, piece: maestro.Piece) -> dict:
  """One piece's example (module docstring); raises BadFileError for a bad MIDI file."""
  try:
    notes = midi_lib.load_notes(os.path.join(manual_dir, piece.midi_filename))
  except midi_lib.MidiError as e:
    raise maestro.BadFileError(str(e)) from None
  us = lambda seconds: np.round(seconds * 1e6).astype(np.int64)
  return {'onsets_us': us(notes.onsets), 'offsets_us': us(notes.offsets),
          'pitches': notes.pitches, 'velocities': notes.velocities,
          'midi_filename': piece.midi_filename,
          'canonical_composer': piece.canonical_composer,
          'canonical_title': piece.canonical_title,
          'year': piece.year, 'duration': piece.duration}


def notes_of(example: dict) -> midi_lib.Notes:
  """The `Notes` of an example as read back (times to the microsecond)."""
  seconds = lambda us: np.asarray(us, np.int64) / 1e6
  return midi_lib.Notes(seconds(example['onsets_us']), seconds(example['offsets_us']),
                        np.asarray(example['pitches'], np.int32),
                        np.asarray(example['velocities'], np.int32))


@dataclasses.dataclass(eq=False)
class MaestroMidiConfig(tfds.core.BuilderConfig):
  """The one configuration: whole pieces' notes."""


class MaestroMidi(tfds.core.GeneratorBasedBuilder):
  """MAESTRO's MIDI performances, one example per piece."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': "Whole pieces' notes after the sustain pedal; array_record."}
  BUILDER_CONFIGS = [MaestroMidiConfig(name='notes', description=__doc__.split('\n')[0])]
  DEFAULT_CONFIG_NAME = 'notes'
  MANUAL_DOWNLOAD_INSTRUCTIONS = maestro.Maestro.MANUAL_DOWNLOAD_INSTRUCTIONS

  def __init__(self, *, on_bad_file: str = 'fail', **kwargs):
    if on_bad_file not in ('fail', 'skip'):
      raise ValueError(f"on_bad_file={on_bad_file!r}: expected 'fail' or 'skip'")
    self._on_bad_file = on_bad_file
    if isinstance(kwargs.get('config'), MaestroMidiConfig):
      kwargs['config'] = kwargs['config'].name  # a pickled copy of the registered config
    super().__init__(file_format='array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    array = lambda dtype: tfds.features.Tensor(shape=(None,), dtype=dtype)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'onsets_us': array(np.int64), 'offsets_us': array(np.int64),
            'pitches': array(np.int32), 'velocities': array(np.int32),
            'midi_filename': tfds.features.Text(),
            'canonical_composer': tfds.features.Text(),
            'canonical_title': tfds.features.Text(),
            'year': tfds.features.Scalar(dtype=np.int32),
            'duration': tfds.features.Scalar(dtype=np.float32),
        }),
        homepage='https://magenta.tensorflow.org/datasets/maestro')

  def _bad(self, split: str, item: str, fault: str) -> None:
    if self._on_bad_file == 'fail':
      raise maestro.BadFileError(fault)
    logging.warning('Skipping %s', fault)
    self._report.append({'split': split, 'file': item, 'fault': fault})

  def _download_and_prepare(self, dl_manager, download_config):
    self._report = []
    super()._download_and_prepare(dl_manager, download_config)
    # self.data_dir is still the temporary directory here: the records land with the dataset.
    with open(os.path.join(self.data_dir, maestro.REPORT_NAME), 'w') as f:
      json.dump({'on_bad_file': self._on_bad_file, 'bad_files': self._report}, f, indent=1)
    with open(os.path.join(self.data_dir, maestro.SOURCE_NAME), 'w') as f:
      json.dump(maestro.source_record(os.fspath(dl_manager.manual_dir)), f, indent=1)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    csv_path = maestro.find_csv(manual_dir)
    pieces, bad_rows = maestro.read_csv(csv_path)
    for row, fault in bad_rows:
      self._bad('csv', row, fault)
    examples = {}
    for piece in pieces:
      try:
        examples[piece.midi_filename] = (piece.split, piece_example(manual_dir, piece))
      except maestro.BadFileError as e:
        self._bad(piece.split, piece.midi_filename, str(e))
    for split in maestro.SPLITS:
      listed = sum(p.split == split for p in pieces)
      if not any(s == split for s, _ in examples.values()):
        raise maestro.BadFileError(
            f'{csv_path}: split {split!r} is empty: ' +
            (f'all {listed} of its pieces are bad (see the log)' if listed
             else 'the CSV lists no piece in it'))
    logging.info('%d pieces read, %d bad', len(examples), len(self._report))
    return {s: self._generate_examples([(k, ex) for k, (split, ex) in examples.items()
                                        if split == s])
            for s in maestro.SPLITS}

  def _generate_examples(self, examples):
    yield from examples


def prepare(manual_dir: str | None = None, data_dir: str | None = None,
            **builder_kwargs) -> MaestroMidi:
  """The prepared builder: MAESTRO's MIDI from `manual_dir`, or the embedded corpus's when it
  is None (generated on first use); as `maestro.prepare`, whose guarantees it shares."""
  return maestro.prepare_builder(
      lambda d: MaestroMidi(data_dir=d, **builder_kwargs), manual_dir, data_dir)
