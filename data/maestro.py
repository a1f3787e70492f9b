"""MAESTRO (v1.0.0, v2.0.0, v3.0.0) and the embedded corpus as a TFDS dataset (array_record).

The builder reads a directory in MAESTRO's published layout, given as `manual_dir`:

    maestro-vX.Y.Z.csv      canonical_composer, canonical_title, split, year, midi_filename,
                            audio_filename, duration (seconds)
    2004/....midi  2004/....wav  2006/...   (16-bit stereo WAV at 44.1 or 48 kHz)

and writes the official train/validation/test splits. An example is one fixed-length segment of
one piece: segment k of a piece holds resampled samples [k S, (k + 1) S) of the whole piece,
S = `segment_samples`; the tail shorter than S is dropped. Features:

    audio               [S] int16      mono mix-down at the config's rate (soundfile's int16 scale)
    pianoroll, onsets   [F, 88] bool   F = S / hop_length, grid anchored at the segment start
    velocities          [F, 88] uint8  (see data/midi.py for the frame and sustain conventions)
    start_sample        int64          offset of the segment in the resampled piece
    audio_filename, midi_filename, canonical_composer, canonical_title (text), year (int32),
    duration (float32, the CSV's piece duration in seconds)

The CSV is read as UTF-8 (a spreadsheet's byte-order mark is fine); it must have the columns
above and at least one row. A row is bad when a value does not parse, its duration is not a
positive finite number, its audio or MIDI path leaves `manual_dir` (absolute, or `..` out of it;
such a file is never opened), or it repeats an earlier row's audio_filename. Every piece is
checked before its examples are written: its audio exists, decodes, is PCM or float samples in
a WAV/FLAC container (no MP3 or u-law behind a .wav name) and is not truncated, its float samples
(when float) are finite and within [-1, 1], its sample rate is not below the dataset's, its
duration matches the CSV's within `duration_tolerance_s` (0.1 s by default), and its MIDI parses
and holds notes. A bad row or piece is handled by the constructor argument `on_bad_file`: 'fail'
(default) stops with one line naming the file and the fault; 'skip' leaves the piece out and
lists it, with its fault, in `bad_files.json` in the dataset directory. A split left without
examples (none in the CSV, or all skipped) stops preparation with one line naming the split.
`num_workers` > 1 decodes and resamples pieces in that many processes.

Guarantees of `prepare`:

* TFDS writes into a temporary `incomplete.*` directory and renames it only when preparation
  succeeded, so a failed preparation leaves nothing a later load could take for a finished
  dataset. SIGTERM during a build removes that directory, kills the workers and exits 0; a
  preparation killed outright (SIGKILL) leaves it behind, and the next one removes it (logged).
  Workers die with the preparing process (Linux: PR_SET_PDEATHSIG).
* `source.json` in the dataset directory records what it was prepared from (the manual_dir's
  absolute path, its CSV's name and sha256, or the embedded corpus's version). Asking for a
  prepared dataset from another source (another CSV; a moved copy of the same CSV is the same
  source) is a one-line ValueError naming both; a dataset prepared before sources were
  recorded is used with a logged warning.
* A complete dataset is read without the preparation lock: a read-only data_dir will do.

`python -m data.prepare` builds it from the command line.
"""

import concurrent.futures
import csv
import dataclasses
import glob
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import time

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from data import audio as audio_lib
from data import midi as midi_lib
from data import specs
from data import workers

CSV_COLUMNS = specs.CSV_COLUMNS
SPLITS = ('train', 'validation', 'test')
REPORT_NAME = 'bad_files.json'
SOURCE_NAME = 'source.json'  # where a prepared dataset came from (`source_record`)
EMBEDDED_CORPUS_VERSION = 1  # bump when data/corpus.py changes what it writes
# The embedded corpora: name -> data/corpus.write_corpus's keyword arguments. 'corpus' is the
# piano corpus; 'instruments' renders its scores in every instrument (data/instruments.py).
EMBEDDED = {'corpus': {}, 'instruments': {'instruments': specs.INSTRUMENTS}}


class BadFileError(ValueError):
  """A piece that cannot be used; the message is one line naming the file and the fault."""


@dataclasses.dataclass(eq=False)
class MaestroConfig(tfds.core.BuilderConfig):
  """Sample rate, segment length and frame hop of a Maestro dataset."""
  sample_rate: int = 16000
  segment_samples: int = 65536
  hop_length: int = 512

  def __post_init__(self):  # the checks of data/specs.py
    specs.Dataset(self.name, self.sample_rate, self.segment_samples, self.hop_length)

  @property
  def num_frames(self) -> int:
    return self.segment_samples // self.hop_length

  @classmethod
  def make(cls, sample_rate: int, segment_samples: int, hop_length: int) -> 'MaestroConfig':
    """A config for any settings, named after them (its own directory under data_dir/maestro)."""
    d = specs.Dataset.make(sample_rate, segment_samples, hop_length)
    return cls(name=d.name, description=d.description, sample_rate=d.sample_rate,
               segment_samples=d.segment_samples, hop_length=d.hop_length)


@dataclasses.dataclass(frozen=True)
class Piece:
  """One row of the MAESTRO CSV."""
  canonical_composer: str
  canonical_title: str
  split: str
  year: int
  midi_filename: str
  audio_filename: str
  duration: float
  instrument: str | None = None  # the optional `instrument` column (data/instruments.py)


def find_csv(manual_dir: str) -> str:
  """The single `maestro-v*.csv` of a MAESTRO directory."""
  if not os.path.isdir(manual_dir):
    raise BadFileError(f'{manual_dir}: MAESTRO directory does not exist')
  found = sorted(glob.glob(os.path.join(manual_dir, 'maestro-v*.csv')))
  if not found:
    raise BadFileError(f'{manual_dir}: no maestro-v*.csv in this directory; expected the MAESTRO '
                       'v1/v2/v3 layout (CSV next to the year folders)')
  if len(found) > 1:
    names = ', '.join(map(os.path.basename, found))
    raise BadFileError(f'{manual_dir}: several MAESTRO CSVs ({names}); expected one')
  return found[0]


def _inside(manual_dir: str, name: str) -> bool:
  """Whether the relative path `name` stays inside `manual_dir` (no absolute path, no `..` out)."""
  if not name or os.path.isabs(name):
    return False
  root = os.path.normpath(os.path.abspath(manual_dir))
  path = os.path.normpath(os.path.join(root, name))
  return path != root and os.path.commonpath([root, path]) == root


def _parse_row(row: dict, manual_dir: str) -> Piece:
  """The row as a Piece; raises ValueError naming the bad value."""
  if row['split'] not in SPLITS:
    raise ValueError(f"split {row['split']!r} is not one of {', '.join(SPLITS)}")
  duration = float(row['duration'])
  if not math.isfinite(duration) or duration <= 0:
    raise ValueError(f"duration {row['duration']!r} of {row['audio_filename']!r} is not a "
                     'positive, finite number of seconds')
  for key in ('audio_filename', 'midi_filename'):
    if not _inside(manual_dir, row[key] or ''):
      raise ValueError(f'{key} {row[key]!r} leaves manual_dir {os.path.abspath(manual_dir)}')
  instrument = row.get('instrument')
  if instrument is not None and instrument not in specs.INSTRUMENTS:
    raise ValueError(f'instrument {instrument!r} of {row["audio_filename"]!r} is not one of '
                     f'{", ".join(specs.INSTRUMENTS)}')
  return Piece(row['canonical_composer'], row['canonical_title'], row['split'], int(row['year']),
               row['midi_filename'], row['audio_filename'], duration, instrument)


def read_csv(csv_path: str) -> tuple[list[Piece], list[tuple[str, str]]]:
  """Parses the MAESTRO CSV (UTF-8, with or without a byte-order mark).

  Returns:
    (pieces, bad_rows): bad_rows are (row description, fault) for rows whose values do not parse,
    whose duration is not a positive finite number, whose paths leave the CSV's directory, or
    that repeat an earlier row's audio_filename.

  Raises:
    BadFileError: the CSV does not open, misses a column, or holds no rows.
  """
  try:
    with open(csv_path, newline='', encoding='utf-8-sig') as f:
      reader = csv.DictReader(f)
      rows = list(reader)
      header = reader.fieldnames or []
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise BadFileError(f'{csv_path}: CSV does not read ({e})') from None
  missing = [c for c in CSV_COLUMNS if c not in header]
  if missing:
    raise BadFileError(f'{csv_path}: missing column(s) {", ".join(missing)}; expected '
                       f'{", ".join(CSV_COLUMNS)}')
  if not rows:
    raise BadFileError(f'{csv_path}: CSV has a header but no rows; expected one row per piece')
  manual_dir = os.path.dirname(os.path.abspath(csv_path))
  pieces, bad, seen = [], [], {}
  for line, row in enumerate(rows, start=2):
    try:
      piece = _parse_row(row, manual_dir)
    except (ValueError, TypeError) as e:
      bad.append((f'{csv_path}:{line}', f'{csv_path}:{line}: bad row ({e})'))
      continue
    if piece.audio_filename in seen:
      bad.append((f'{csv_path}:{line}',
                  f'{csv_path}:{line}: duplicate row: audio_filename {piece.audio_filename!r} '
                  f'is already on line {seen[piece.audio_filename]}'))
      continue
    seen[piece.audio_filename] = line
    pieces.append(piece)
  return pieces, bad


def check_piece(manual_dir: str, piece: Piece, sample_rate: int, tolerance_s: float) -> None:
  """Raises BadFileError unless the piece's audio and MIDI are usable (module docstring)."""
  path = os.path.join(manual_dir, piece.audio_filename)
  try:
    info = audio_lib.audio_info(path)
    midi_lib.load_notes(os.path.join(manual_dir, piece.midi_filename))
  except (audio_lib.AudioError, midi_lib.MidiError) as e:
    raise BadFileError(str(e)) from None
  if info.samplerate < sample_rate:
    raise BadFileError(f'{path}: sample rate {info.samplerate} Hz is below the dataset\'s '
                       f'{sample_rate} Hz')
  seconds = info.frames / info.samplerate
  if abs(seconds - piece.duration) > tolerance_s:
    raise BadFileError(f'{path}: decoded duration {seconds:.3f} s differs from the CSV\'s '
                       f'{piece.duration:.3f} s by more than {tolerance_s} s')


def piece_examples(manual_dir: str, piece: Piece, config: MaestroConfig) -> list[dict]:
  """All segments of one piece as feature dicts (runs in worker processes)."""
  path = os.path.join(manual_dir, piece.audio_filename)
  try:
    x, sr = audio_lib.read_audio(path)  # [N]
    notes = midi_lib.load_notes(os.path.join(manual_dir, piece.midi_filename))
  except (audio_lib.AudioError, midi_lib.MidiError) as e:
    raise BadFileError(str(e)) from None
  x = audio_lib.to_int16(audio_lib.resample(x, sr, config.sample_rate))
  n, s, f = len(x) // config.segment_samples, config.segment_samples, config.num_frames
  frames = midi_lib.frame_features(notes, n * f, config.hop_length, config.sample_rate)
  return [{
      'audio': x[k * s:(k + 1) * s],
      'pianoroll': frames['pianoroll'][k * f:(k + 1) * f],
      'onsets': frames['onsets'][k * f:(k + 1) * f],
      'velocities': frames['velocities'][k * f:(k + 1) * f],
      'start_sample': k * s,
      'audio_filename': piece.audio_filename,
      'midi_filename': piece.midi_filename,
      'canonical_composer': piece.canonical_composer,
      'canonical_title': piece.canonical_title,
      'year': piece.year,
      'duration': piece.duration,
  } for k in range(n)]


def _checked(fn, *args):
  """Runs fn in a worker: (result, None), or (None, fault) for a bad file."""
  try:
    return fn(*args), None
  except BadFileError as e:
    return None, str(e)


def _ordered_map(pool, fn, items, window: int):
  """pool.submit over items in order, at most `window` results in flight (bounded memory)."""
  items, futures = list(items), []
  for i, item in enumerate(items):
    futures.append(pool.submit(_checked, fn, *item))
    if i >= window:
      yield futures.pop(0).result()
  for fut in futures:
    yield fut.result()


class Maestro(tfds.core.GeneratorBasedBuilder):
  """MAESTRO piano audio with aligned MIDI, cut into fixed-length segments."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Segments with frame-level MIDI features; array_record.'}
  BUILDER_CONFIGS = [
      MaestroConfig(name=d.name, description=d.description, sample_rate=d.sample_rate,
                    segment_samples=d.segment_samples, hop_length=d.hop_length)
      for d in specs.NAMED]
  DEFAULT_CONFIG_NAME = '16k'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download MAESTRO (v1.0.0, v2.0.0 or v3.0.0, the "wav" zip) from
  https://magenta.tensorflow.org/datasets/maestro, unzip it and pass the folder holding
  maestro-vX.Y.Z.csv as manual_dir (python -m data.prepare --manual_dir=...).
  """

  def __init__(self, *, on_bad_file: str = 'fail', num_workers: int = 1,
               duration_tolerance_s: float = 0.1, **kwargs):
    if on_bad_file not in ('fail', 'skip'):
      raise ValueError(f"on_bad_file={on_bad_file!r}: expected 'fail' or 'skip'")
    self._on_bad_file = on_bad_file
    self._num_workers = num_workers
    self._tolerance_s = duration_tolerance_s
    config = kwargs.get('config')
    if isinstance(config, MaestroConfig) and config.name in {c.name for c in self.BUILDER_CONFIGS}:
      # TFDS accepts a registered config by name only; a copy of one (from pickling the builder
      # into grain's worker processes, say) would be taken for a clashing custom config.
      kwargs['config'] = config.name
    super().__init__(file_format='array_record', **kwargs)

  def _features(self) -> dict:
    """The example's features (a subclass adds its own)."""
    c = self.builder_config
    roll = lambda dtype: tfds.features.Tensor(shape=(c.num_frames, midi_lib.NUM_KEYS), dtype=dtype)
    return {
        'audio': tfds.features.Tensor(shape=(c.segment_samples,), dtype=np.int16),
        'pianoroll': roll(np.bool_),
        'onsets': roll(np.bool_),
        'velocities': roll(np.uint8),
        'start_sample': tfds.features.Scalar(dtype=np.int64),
        'audio_filename': tfds.features.Text(),
        'midi_filename': tfds.features.Text(),
        'canonical_composer': tfds.features.Text(),
        'canonical_title': tfds.features.Text(),
        'year': tfds.features.Scalar(dtype=np.int32),
        'duration': tfds.features.Scalar(dtype=np.float32),
    }

  def _example(self, example: dict, piece: Piece) -> dict:
    """One segment's features as written (a subclass adds its own)."""
    del piece
    return example

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(self._features()),
        metadata=tfds.core.MetadataDict(sample_rate=c.sample_rate, hop_length=c.hop_length,
                                        segment_samples=c.segment_samples),
        homepage='https://magenta.tensorflow.org/datasets/maestro',
    )

  def _bad(self, split: str, item: str, fault: str) -> None:
    if self._on_bad_file == 'fail':
      raise BadFileError(fault)
    logging.warning('Skipping %s', fault)
    self._report.append({'split': split, 'file': item, 'fault': fault})

  def _download_and_prepare(self, dl_manager, download_config):
    self._report, self._stats = [], {'pieces': 0, 'seconds': 0.0, 'short': []}
    self._started = time.time()
    if self._num_workers > 1:
      self._pool = concurrent.futures.ProcessPoolExecutor(
          self._num_workers, mp_context=multiprocessing.get_context('spawn'),
          initializer=workers.die_with_parent, initargs=(os.getpid(),))
    else:
      self._pool = workers.SerialPool()
    try:
      super()._download_and_prepare(dl_manager, download_config)
    except BaseException:
      workers.kill_workers(self._pool)
      raise
    finally:
      self._pool.shutdown(wait=True, cancel_futures=True)
    # self.data_dir is still the temporary directory here: the report lands with the dataset.
    report = {'on_bad_file': self._on_bad_file, 'bad_files': self._report,
              'shorter_than_one_segment': self._stats['short']}
    with open(os.path.join(self.data_dir, REPORT_NAME), 'w') as f:
      json.dump(report, f, indent=1)
    with open(os.path.join(self.data_dir, SOURCE_NAME), 'w') as f:
      json.dump(source_record(os.fspath(dl_manager.manual_dir)), f, indent=1)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    pieces, bad_rows = read_csv(find_csv(manual_dir))
    for row, fault in bad_rows:
      self._bad('csv', row, fault)
    c = self.builder_config
    checks = _ordered_map(self._pool, check_piece,
                          [(manual_dir, p, c.sample_rate, self._tolerance_s) for p in pieces],
                          window=4 * max(self._num_workers, 1))
    good = []
    for piece, (_, fault) in zip(pieces, checks):
      if fault:
        self._bad(piece.split, piece.audio_filename, fault)
      else:
        good.append(piece)
    self._total = len(good)
    logging.info('%d pieces passed the checks, %d failed', len(good), len(self._report))
    for split in SPLITS:
      listed = sum(p.split == split for p in pieces)
      if not any(p.split == split for p in good):
        raise BadFileError(f'{find_csv(manual_dir)}: split {split!r} is empty: '
                           + (f'all {listed} of its pieces are bad (see the log)' if listed
                              else 'the CSV lists no piece in it'))
    return {s: self._generate_examples(manual_dir, [p for p in good if p.split == s], s)
            for s in SPLITS}

  def _generate_examples(self, manual_dir, pieces, split):
    c = self.builder_config
    results = _ordered_map(self._pool, piece_examples, [(manual_dir, p, c) for p in pieces],
                           window=2 * max(self._num_workers, 1))
    written = 0
    for piece, (examples, fault) in zip(pieces, results):
      if fault:
        self._bad(piece.split, piece.audio_filename, fault)
        continue
      if not examples:
        self._stats['short'].append(piece.audio_filename)
      self._stats['pieces'] += 1
      self._stats['seconds'] += piece.duration
      elapsed = time.time() - self._started
      logging.info('[%d/%d] %s: %d segments; %.0f s of audio at %.1fx real time',
                   self._stats['pieces'], self._total, piece.audio_filename, len(examples),
                   self._stats['seconds'], self._stats['seconds'] / max(elapsed, 1e-9))
      for ex in examples:
        yield f"{ex['audio_filename']}:{ex['start_sample']}", self._example(ex, piece)
      written += len(examples)
    if not written:
      raise BadFileError(f'{find_csv(manual_dir)}: split {split!r} is empty: none of its '
                         f'{len(pieces)} pieces gave a segment of {c.segment_samples} samples')


# ---------------------------------------------------------------------------------------------
# The embedded corpus, and preparing either.


def cache_dir() -> str:
  """Where the embedded corpus and its dataset live: $WAVEGEN_CACHE, else ~/.cache/wavegen."""
  return os.path.expanduser(os.environ.get('WAVEGEN_CACHE', '~/.cache/wavegen'))


def embedded_dirs(root: str | None = None, name: str = 'corpus') -> tuple[str, str]:
  """(manual_dir, data_dir) of the embedded corpus `name` (one of EMBEDDED) under the cache
  directory."""
  root = os.path.join(root or cache_dir(), f'embedded-v{EMBEDDED_CORPUS_VERSION}')
  return os.path.join(root, name), os.path.join(root, 'tfds')


def get_config(name: str | MaestroConfig) -> MaestroConfig:
  """A builder config by name ('16k', '24k' or 'sr{rate}_seg{samples}_hop{hop}'; data/specs.py)."""
  if isinstance(name, MaestroConfig):
    return name
  for c in Maestro.BUILDER_CONFIGS:
    if c.name == name:
      return c
  d = specs.dataset(name)
  return MaestroConfig.make(d.sample_rate, d.segment_samples, d.hop_length)


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def source_record(manual_dir: str) -> dict:
  """What a dataset is prepared from: the MAESTRO directory's absolute path, its CSV's name and
  sha256, and whether it is the embedded corpus (and which version)."""
  manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
  csv_path = find_csv(manual_dir)
  embedded = [n for n in EMBEDDED if manual_dir == os.path.abspath(embedded_dirs(name=n)[0])]
  record = {'manual_dir': manual_dir, 'csv': os.path.basename(csv_path),
            'csv_sha256': _sha256(csv_path),
            'embedded_corpus_version': EMBEDDED_CORPUS_VERSION if embedded else None}
  if embedded and embedded[0] != 'corpus':
    record['embedded_corpus'] = embedded[0]
  return record


def _describe_source(record: dict) -> str:
  if record.get('embedded_corpus_version'):
    return f"the embedded corpus v{record['embedded_corpus_version']} ({record['manual_dir']})"
  sha = record.get('csv_sha256')
  return f"manual_dir={record['manual_dir']}" + (f" ({record['csv']} sha256 {sha[:12]})"
                                                  if sha else '')


def check_source(builder, manual_dir: str | None, embedded: str = 'corpus') -> None:
  """Checks that a prepared dataset was prepared from `manual_dir` (None: the embedded corpus
  `embedded`).

  The source matches when both are the embedded corpus of the same version, or both are MAESTRO
  directories whose CSVs have the same sha256 (a moved or copied directory matches); when the
  asked-for CSV cannot be read, the directories' paths must be equal. A dataset prepared before
  sources were recorded is accepted with a warning.

  Raises:
    ValueError: one line naming the dataset, the source it was prepared from and the one asked
      for.
  """
  path = os.path.join(builder.data_dir, SOURCE_NAME)
  try:
    with open(path) as f:
      recorded = json.load(f)
  except FileNotFoundError:
    logging.warning('%s: prepared before sources were recorded; cannot check that it was '
                    'prepared from %s', builder.data_dir,
                    'the embedded corpus' if manual_dir is None else manual_dir)
    return
  except (OSError, ValueError) as e:
    raise ValueError(f'{path}: source record does not read ({e})') from None
  if manual_dir is None:
    asked = {'manual_dir': os.path.abspath(embedded_dirs(name=embedded)[0]), 'csv': None,
             'csv_sha256': None, 'embedded_corpus_version': EMBEDDED_CORPUS_VERSION}
    same = (recorded.get('embedded_corpus_version') == EMBEDDED_CORPUS_VERSION
            and recorded.get('embedded_corpus', 'corpus') == embedded)
  else:
    try:
      asked = source_record(manual_dir)
      same = (asked['embedded_corpus_version'] == recorded.get('embedded_corpus_version')
              and asked['csv_sha256'] == recorded.get('csv_sha256'))
    except BadFileError:  # no readable CSV there: the paths must agree
      asked = {'manual_dir': os.path.abspath(os.path.expanduser(manual_dir)), 'csv_sha256': None}
      same = (not recorded.get('embedded_corpus_version')
              and asked['manual_dir'] == recorded.get('manual_dir'))
  if not same:
    raise ValueError(f'{builder.data_dir}: prepared from {_describe_source(recorded)}, but '
                     f'{_describe_source(asked)} was asked for; pass another data_dir, or '
                     'delete this directory to prepare it again')
  if asked['manual_dir'] != recorded.get('manual_dir'):
    logging.info('%s: prepared from %s, the same CSV as %s', builder.data_dir,
                 recorded.get('manual_dir'), asked['manual_dir'])


def prepare(config: str | MaestroConfig = '16k', manual_dir: str | None = None,
            data_dir: str | None = None, **builder_kwargs) -> Maestro:
  """The prepared builder: MAESTRO from `manual_dir`, or the embedded corpus when it is None.

  The embedded corpus is generated (data/corpus.py) and built on first use under `cache_dir()`.
  A complete dataset is read without taking a lock (a read-only `data_dir` will do). Building
  holds a file lock in `data_dir` (TFDS's default when None), so that concurrent jobs on one
  machine build a dataset once and the others wait for it; under the lock it first removes the
  `incomplete.*` directories of killed preparations. SIGTERM while building cleans up and
  exits 0 (module docstring).

  Raises:
    BadFileError: preparation met a bad file (one line naming it and the fault).
    ValueError: the prepared dataset in `data_dir` comes from another source (`check_source`).
  """
  config = get_config(config)
  return prepare_builder(lambda d: Maestro(config=config, data_dir=d, **builder_kwargs),
                         manual_dir, data_dir)


def prepare_builder(make, manual_dir: str | None, data_dir: str | None,
                    embedded: str = 'corpus'):
  """`prepare` for any builder over a MAESTRO directory: `make(data_dir)` gives the builder
  (data_dir None: TFDS's default), whose data lives in data_dir/<name>/<config>/<version>;
  manual_dir None reads the embedded corpus `embedded` (one of EMBEDDED)."""
  asked = manual_dir
  if manual_dir is None:
    manual_dir, default_data_dir = embedded_dirs(name=embedded)
    data_dir = data_dir or default_data_dir
  builder = make(data_dir)
  if not builder.is_prepared():
    # data_dir/<name>/<config>/<version>: the lock lives in data_dir (TFDS's default if None).
    root = data_dir or os.path.dirname(os.path.dirname(os.path.dirname(builder.data_dir)))
    with workers.exit_on_sigterm(), workers.file_lock(os.path.join(root, '.prepare.lock')):
      if asked is None and not os.path.exists(manual_dir):
        from data import corpus  # pylint: disable=g-import-not-at-top
        logging.info('Generating the embedded corpus in %s', manual_dir)
        corpus.write_corpus(manual_dir, **EMBEDDED[embedded])
      builder = make(data_dir)  # another job's?
      if not builder.is_prepared():
        _remove_incomplete(builder)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=os.path.expanduser(manual_dir)))
        return builder
  check_source(builder, asked, embedded)
  return builder


def _remove_incomplete(builder) -> None:
  """Removes the `incomplete.*` directories that killed preparations of this config left.

  Only called under the lock, when no other preparation on this machine is running.
  """
  for path in sorted(glob.glob(os.path.join(os.path.dirname(builder.data_dir), 'incomplete.*'))):
    shutil.rmtree(path, ignore_errors=True)
    logging.warning('Removed %s, left by an earlier preparation that was killed', path)


def describe(builder: Maestro) -> str:
  """A few lines saying what a prepared dataset holds."""
  c, info = builder.builder_config, builder.info
  lines = [f'{builder.data_dir}: maestro/{c.name}, {c.sample_rate} Hz, '
           f'{c.segment_samples}-sample segments, {c.num_frames} frames of {c.hop_length} samples']
  for name, split in sorted(info.splits.items()):
    hours = split.num_examples * c.segment_samples / c.sample_rate / 3600
    lines.append(f'  {name:<10} {split.num_examples:>7} segments  {hours:8.3f} h  '
                 f'{split.num_bytes / 2**20:9.1f} MiB')
  with open(os.path.join(builder.data_dir, REPORT_NAME)) as f:
    report = json.load(f)
  lines.append(f"  bad files skipped: {len(report['bad_files'])} (see {REPORT_NAME})")
  return '\n'.join(lines)
