"""The multi-instrument dataset: the Maestro builder over a corpus that plays each score on
several instruments, with the instrument as a feature (music translation's paired data).

The directory is MAESTRO's layout (data/maestro.py) with one more CSV column, `instrument`
(one of data.specs.INSTRUMENTS), one row per (score, instrument): the rows of a score share its
`midi_filename` and its split, so that no test score is heard in training in any instrument.
data/corpus.py writes such a corpus (`write_corpus(instruments=...)`); the embedded one renders
every score of the piano corpus in every instrument. An example is a segment as in
data/maestro.py plus

    instrument     int64 (ClassLabel over specs.INSTRUMENTS)   the rendering's instrument

and segment k of every rendering of a score holds the same notes (their frame features are
those of the shared MIDI), which the translation evaluator pairs by (midi_filename,
start_sample). Preparation fails with one line naming the CSV when it has no `instrument`
column, or when a score's rows disagree on the split.
"""

import tensorflow_datasets as tfds

from data import maestro
from data import specs


class MaestroInstruments(maestro.Maestro):
  """Scores rendered by several instruments, cut into fixed-length segments."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Segments of every instrument\'s rendering; an instrument feature.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  A directory in MAESTRO's layout whose CSV has an `instrument` column (one of
  data.specs.INSTRUMENTS), e.g. written by `python -m data.corpus --instruments=...`.
  """

  def _features(self) -> dict:
    return {**super()._features(), 'instrument': tfds.features.ClassLabel(
        names=list(specs.INSTRUMENTS))}

  def _example(self, example: dict, piece: maestro.Piece) -> dict:
    return {**example, 'instrument': specs.INSTRUMENTS.index(piece.instrument)}

  def _split_generators(self, dl_manager):
    csv_path = maestro.find_csv(dl_manager.manual_dir)
    pieces, _ = maestro.read_csv(csv_path)
    if any(p.instrument is None for p in pieces):
      raise maestro.BadFileError(f'{csv_path}: no `instrument` column; expected one of '
                                 f'{", ".join(specs.INSTRUMENTS)} on every row')
    splits = {}
    for p in pieces:
      if splits.setdefault(p.midi_filename, p.split) != p.split:
        raise maestro.BadFileError(
            f'{csv_path}: score {p.midi_filename!r} is in split {splits[p.midi_filename]!r} '
            f'and {p.split!r}; every rendering of a score must be in one split')
    return super()._split_generators(dl_manager)


def prepare(config: str | maestro.MaestroConfig = '16k', manual_dir: str | None = None,
            data_dir: str | None = None, **builder_kwargs) -> MaestroInstruments:
  """The prepared builder over `manual_dir`, or the embedded multi-instrument corpus when it is
  None (generated on first use); as `maestro.prepare`, whose guarantees it shares."""
  config = maestro.get_config(config)
  return maestro.prepare_builder(
      lambda d: MaestroInstruments(config=config, data_dir=d, **builder_kwargs),
      manual_dir, data_dir, embedded='instruments')
