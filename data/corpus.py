"""The embedded default corpus: a small piano dataset in the MAESTRO v3.0.0 layout, and the
same scores played by other instruments (music translation's paired data).

    python -m data.corpus --out=/tmp/corpus [--num_pieces=32 --max_seconds=20 --source=auto
                                             --instruments=piano --renderer=synth]

writes `maestro-v3.0.0.csv` (the MAESTRO columns, relative paths) and `{year}/{name}.midi`,
`{year}/{name}.wav` (16-bit stereo), so the dataset builder reads it exactly as it reads MAESTRO.
With other instruments than the piano alone (`--instruments=piano,organ,...`, any of
data.specs.INSTRUMENTS) every score is rendered by every one of them, to
`{year}/{name}.{instrument}.wav`, with one CSV row per (score, instrument) and a final
`instrument` column (data/instruments.py reads it); the rows of a score share its MIDI file, its
split and its length, and its renderings its note onsets, sample for sample.
Everything is a function of the arguments: the same arguments give byte-identical files, for any
number of worker processes.

Scores come from the Bach chorales shipped with music21 (`source='bach'`; an optional
dependency) or from a seeded generator of small piano studies (`source='procedural'`). Either
way they are "performed": velocities per voice with a downbeat accent and humanisation, and a
legato sustain pedal released exactly on each bar line (each harmony change for the studies)
and pressed again PEDAL_LAG later, so repeated notes under the pedal exercise the re-strike
rule of data/midi.py. Each MIDI file is written, read back with `midi.load_notes`, and the
audio rendered by data/synth.py from what was read, so MIDI tick quantisation and the sustain
rule match the audio exactly. `renderer='fluidsynth'` renders the MIDI files with the fluidsynth
program and a General MIDI SoundFont instead (GM_PROGRAMS; optional, Debian:
`apt install fluidsynth fluid-soundfont-gm`, or name the SoundFont in $WAVEGEN_SOUNDFONT).
"""

import concurrent.futures
import contextlib
import csv
import functools
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import mido
import numpy as np
import soundfile as sf

from data import audio
from data import midi
from data import specs
from data import synth

CSV_NAME = 'maestro-v3.0.0.csv'
SOURCES = ('auto', 'bach', 'procedural')
RENDERERS = ('synth', 'fluidsynth')
# General MIDI programs (0-based) of the instruments, for renderer='fluidsynth'.
GM_PROGRAMS = {'piano': 0, 'organ': 19, 'harpsichord': 6, 'strings': 48, 'mallet': 12}
SOUNDFONT_ENV = 'WAVEGEN_SOUNDFONT'
SOUNDFONTS = ('/usr/share/sounds/sf2/FluidR3_GM.sf2', '/usr/share/sounds/sf2/default-GM.sf2',
              '/usr/share/soundfonts/FluidR3_GM.sf2', '/usr/share/soundfonts/default.sf2')
_INSTALL = 'install with `apt install fluidsynth fluid-soundfont-gm`'
BACH_COMPOSER = 'Johann Sebastian Bach'
PROCEDURAL_COMPOSER = 'Wavegen procedural'
DEFAULT_BPM = 80.0  # chorales without a metronome mark
TAIL = 1.0  # seconds of audio after the last sounding offset
PEAK_DBFS = -1.0
PEDAL_LAG = 0.05  # seconds from a bar line to pressing the pedal again
ARTICULATION = 0.92  # key released after this fraction of the written duration
# Base velocity per voice role: melody, inner voices / accompaniment, bass.
ROLE_VELOCITY = (78, 58, 66)
ACCENT = 10  # added on bar lines
HUMANISE = 6  # +- uniform velocity jitter

_SCORE_SUFFIXES = ('.mxl', '.xml', '.musicxml', '.krn')


def _split(i: int) -> str:
  return {1: 'validation', 2: 'test'}.get(i % 8, 'train')


# ---------------------------------------------------------------------------------------------
# Scores: dicts of onsets, offsets (key releases, seconds), pitches, roles, bars (seconds).


def _bach_score(path: str) -> dict | None:
  """A chorale from the music21 corpus as a score dict; None if it does not parse."""
  import music21  # pylint: disable=g-import-not-at-top  (optional dependency)
  try:
    s = music21.converter.parse(path)
    s.stripTies(inPlace=True)
  except Exception as e:  # music21 raises many types on bad files
    logging.warning('%s: skipped, does not parse (%s: %s)', path, type(e).__name__, e)
    return None
  marks = list(s.flatten().getElementsByClass(music21.tempo.MetronomeMark))
  bpm = (marks[0].getQuarterBPM() if marks else None) or DEFAULT_BPM
  spq = 60.0 / bpm  # seconds per quarter note
  parts = list(s.parts) or [s]
  events = []  # (onset, duration, pitch, part)
  for j, part in enumerate(parts):
    for n in part.flatten().notes:
      if n.quarterLength > 0:  # grace notes have none
        events += [(float(n.offset), float(n.quarterLength), p.midi, j) for p in n.pitches]
  if not events:
    return None
  on, dur, pitch, part = (np.array(x) for x in zip(*events))
  # The highest part is the melody and the lowest the bass.
  mean = np.array([pitch[part == j].mean() if (part == j).any() else 0 for j in range(len(parts))])
  role = np.where(mean[part] == mean.max(), 0, np.where(mean[part] == mean[mean > 0].min(), 2, 1))
  # Bar lines: measure starts, except a pickup measure (number 0), which is not a downbeat.
  measures = parts[0].getElementsByClass(music21.stream.Measure)
  bars = sorted({float(m.offset) for m in measures if m.number != 0}) or list(
      np.arange(0.0, float(on.max()) + 4, 4.0))
  stem = os.path.splitext(os.path.basename(path))[0]  # bwv66.6
  bwv = stem[3:] if stem.startswith('bwv') else stem
  title = _chorale_titles().get(bwv)
  return {
      'name': f'bach_{stem}',
      'composer': BACH_COMPOSER,
      'title': f'Chorale "{title}", BWV {bwv}' if title else f'Chorale, BWV {bwv}',
      'onsets': on * spq,
      'offsets': (on + ARTICULATION * dur) * spq,
      'pitches': pitch,
      'roles': role,
      'bars': np.array(bars) * spq,
  }


@functools.cache
def _chorale_titles() -> dict[str, str]:
  from music21.corpus import chorales  # pylint: disable=g-import-not-at-top
  return {str(k): v['title'] for k, v in chorales.ChoraleListRKBWV().byBWV.items()}


def _bach_paths() -> list[str]:
  import music21  # pylint: disable=g-import-not-at-top
  return sorted(str(p) for p in music21.corpus.getComposer('bach')
                if str(p).endswith(_SCORE_SUFFIXES))


_NOTE_NAMES = ('C', 'C#', 'D', 'Eb', 'E', 'F', 'F#', 'G', 'Ab', 'A', 'Bb', 'B')
_SCALES = {'major': (0, 2, 4, 5, 7, 9, 11), 'minor': (0, 2, 3, 5, 7, 8, 11)}  # harmonic minor
# Chord (scale degree) -> the degrees it may move to: functional harmony in miniature.
_NEXT = {0: (3, 4, 5, 1), 1: (4, 6), 3: (4, 0, 1), 4: (0, 5), 5: (1, 3), 6: (0,)}


def _procedural_score(index: int, seed: int, max_seconds: float) -> dict:
  """A seeded piano study: a chord progression, a left-hand pattern and a stepwise melody."""
  rng = np.random.default_rng([seed, index, 1])
  tonic = int(rng.integers(12))
  mode = str(rng.choice(list(_SCALES)))
  scale = np.array(_SCALES[mode])
  spb = 60.0 / float(rng.choice([63, 72, 84, 96, 108, 120]))  # seconds per beat
  beats = int(rng.choice([3, 4]))
  pattern = str(rng.choice(['alberti', 'arpeggio', 'block']))
  changes = 2 if beats == 4 and rng.random() < 0.4 else 1  # harmonies per bar
  span = beats // changes  # beats per harmony
  num_chords = int(np.ceil(max_seconds / (span * spb)))

  def degree_pitch(d, low):  # MIDI pitch of scale degree d (any integer) at or above `low`
    pc = tonic + scale[d % 7] + 12 * (d // 7)
    return int(pc + 12 * int(np.ceil((low - pc) / 12)))

  chords = [0]
  while len(chords) < num_chords:
    chords.append(int(rng.choice(_NEXT[chords[-1]])))
  if num_chords >= 3:
    chords[-2:] = [4, 0]  # end on a cadence
  notes = []  # (onset beat, duration beats, pitch, role)
  melody = degree_pitch(0, 67)
  steps = np.array([p for p in range(55, 90) if (p - tonic) % 12 in scale])  # the scale
  for c, d in enumerate(chords):
    t0 = c * span
    root = degree_pitch(d, 36)
    third, fifth = degree_pitch(d + 2, root + 1), degree_pitch(d + 4, root + 1)
    tones = [root, fifth, third, fifth]  # Alberti bass
    if pattern == 'arpeggio':
      tones = [root, fifth, third + 12, fifth + 12]
    if pattern == 'block':
      notes.append((t0, span, root, 2))
      notes += [(t0 + b, 1, p, 1) for b in range(span) for p in (third + 12, fifth + 12)]
    else:
      notes.append((t0, 0.5, root, 2))
      notes += [(t0 + 0.5 * e, 0.5, tones[e % 4], 1) for e in range(1, 2 * span)]
    # Melody: a chord tone on the harmony change, then steps, repeats and small leaps.
    chord_pcs = {p % 12 for p in (root, third, fifth)}
    t = 0.0
    while t < span:
      dur = float(rng.choice([0.5, 1.0, 1.0, 2.0] if span - t >= 2 else [0.5, 1.0]))
      if t == 0:
        melody = min((p for p in range(melody - 5, melody + 6) if p % 12 in chord_pcs),
                     key=lambda p: (abs(p - melody), p))
      else:
        step = int(rng.choice([-2, -1, -1, 0, 1, 1, 2]))
        i = int(np.argmin(np.abs(steps - melody))) + step
        melody = int(steps[np.clip(i, 0, len(steps) - 1)])
      melody = int(np.clip(melody, 64, 86))
      notes.append((t0 + t, min(dur, span - t), melody, 0))
      t += dur
  on, dur, pitch, role = (np.array(x) for x in zip(*notes))
  return {
      'name': f'procedural_{index:03d}',
      'composer': PROCEDURAL_COMPOSER,
      'title': f'Study No. {index + 1} in {_NOTE_NAMES[tonic]} {mode}',
      'onsets': on * spb,
      'offsets': (on + ARTICULATION * dur) * spb,
      'pitches': pitch,
      'roles': role,
      'bars': np.arange(num_chords) * span * spb,
  }


def _perform(score: dict, index: int, seed: int,
             max_seconds: float) -> tuple[midi.Notes, list[tuple[float, float]]]:
  """Key presses with velocities, and sustain-pedal intervals, cut to `max_seconds`."""
  on, off, pitch, role = score['onsets'], score['offsets'], score['pitches'], score['roles']
  # One key cannot be struck twice at once: where voices share a note (doubling instrumental
  # parts in some chorales, melody and chord in the studies) keep the longest, then the melody.
  order = np.lexsort((role, on - off, pitch, on))
  _, first = np.unique(np.stack([on[order], pitch[order]], 1), axis=0, return_index=True)
  keep = order[first]
  keep = keep[(on[keep] < max_seconds) & (pitch[keep] >= midi.MIN_PITCH)
              & (pitch[keep] < midi.MIN_PITCH + midi.NUM_KEYS)]
  on, off, pitch, role = on[keep], np.minimum(off[keep], max_seconds), pitch[keep], role[keep]
  rng = np.random.default_rng([seed, index, 2])
  bars = score['bars'][score['bars'] < off.max()]
  downbeat = np.isin(np.round(on, 6), np.round(bars, 6))
  level = rng.integers(-8, 9)  # each piece has its own overall dynamic
  velocity = (np.array(ROLE_VELOCITY)[role] + ACCENT * downbeat + level
              + rng.integers(-HUMANISE, HUMANISE + 1, len(on)))
  # A key is released before it is struck again: overlapping presses of one key are ambiguous.
  for p in np.unique(pitch):
    idx = np.flatnonzero(pitch == p)
    idx = idx[np.argsort(on[idx])]
    off[idx[:-1]] = np.minimum(off[idx[:-1]], on[idx[1:]])
  notes = midi.make_notes(on, off, pitch, np.clip(velocity, 1, 127))
  # Legato pedalling: up exactly on each bar line, down again PEDAL_LAG after it.
  ups = np.append(bars[1:], off.max())
  pedals = [(float(b + PEDAL_LAG), float(u)) for b, u in zip(bars, ups) if u > b + 2 * PEDAL_LAG]
  return notes, pedals


# ---------------------------------------------------------------------------------------------
# Writing.


def fluidsynth() -> tuple[str, str]:
  """(the fluidsynth program, a General MIDI SoundFont), or a one-line ValueError saying which
  is missing and how to install it."""
  program = shutil.which('fluidsynth')
  if program is None:
    raise ValueError(f"renderer='fluidsynth': the fluidsynth program is not on PATH; "
                     f'{_INSTALL}')
  if os.environ.get(SOUNDFONT_ENV):
    found = [os.environ[SOUNDFONT_ENV]]
    if not os.path.isfile(found[0]):
      raise ValueError(f"renderer='fluidsynth': {SOUNDFONT_ENV}={found[0]} is not a file; "
                       f'point it at a General MIDI SoundFont (.sf2), or {_INSTALL}')
  else:
    found = [p for p in SOUNDFONTS if os.path.isfile(p)]
  if not found:
    raise ValueError(f"renderer='fluidsynth': no General MIDI SoundFont (looked for "
                     f"${SOUNDFONT_ENV}, {', '.join(SOUNDFONTS)}); {_INSTALL}")
  return program, found[0]


def _fluidsynth_render(midi_path: str, instrument: str, sample_rate: int, num_samples: int,
                       program: str, soundfont: str) -> np.ndarray:
  """The MIDI file played by `instrument`'s General MIDI program, dry: float32 [T, 2]."""
  mid = mido.MidiFile(midi_path)
  for track in mid.tracks:
    changes = [m for m in track if m.type == 'program_change']
    for m in changes:
      m.program = GM_PROGRAMS[instrument]
    if not changes:
      channels = sorted({m.channel for m in track if m.type in ('note_on', 'note_off')})
      track[:0] = [mido.Message('program_change', channel=c, program=GM_PROGRAMS[instrument])
                   for c in channels]
  with tempfile.TemporaryDirectory(prefix='wavegen-fluidsynth-') as tmp:
    mid.save(os.path.join(tmp, 'in.mid'))
    wav = os.path.join(tmp, 'out.wav')
    done = subprocess.run(
        [program, '-ni', '-R', '0', '-C', '0', '-g', '0.5', '-r', str(sample_rate), '-T', 'wav',
         '-O', 'float', '-F', wav, soundfont, os.path.join(tmp, 'in.mid')],
        capture_output=True, text=True, errors='replace', check=False)
    if done.returncode or not os.path.isfile(wav):
      last = (done.stderr.strip() or done.stdout.strip() or '?').splitlines()[-1]
      raise RuntimeError(f'{midi_path}: fluidsynth failed ({done.returncode}): {last}')
    x, _ = sf.read(wav, dtype='float32', always_2d=True)  # [T', C]
  x = np.repeat(x, 2, axis=1) if x.shape[1] == 1 else x[:, :2]
  return np.pad(x[:num_samples], ((0, max(num_samples - len(x), 0)), (0, 0)))  # [T, 2]


def _write_piece(job: dict) -> float:
  """Writes one score's MIDI and its WAV in each instrument; returns the audio duration in
  seconds (the same for every instrument)."""
  midi_path = os.path.join(job['root'], job['midi_filename'])
  midi.write_midi(midi_path, job['notes'], job['pedals'])
  # Render what a reader of the MIDI file will see: tick-quantised times, sustain applied.
  notes = midi.load_notes(midi_path, sustain=True)
  sr = job['sample_rate']
  num_samples = int(round((notes.end_time + TAIL) * sr))
  for instrument, audio_filename in job['renderings']:
    if job['renderer'] == 'fluidsynth':
      x = _fluidsynth_render(midi_path, instrument, sr, num_samples, *job['fluidsynth'])
    else:
      x = synth.render(notes, sr, num_samples, seed=job['seed'], instrument=instrument)  # [T, 2]
    x *= 10 ** (PEAK_DBFS / 20) / max(float(np.abs(x).max()), 1e-9)
    pcm = audio.to_int16(x)  # [T, 2]
    sf.write(os.path.join(job['root'], audio_filename), pcm, sr, subtype='PCM_16')
  return num_samples / sr


def _resolve_source(source: str) -> str:
  if source not in SOURCES:
    raise ValueError(f'source={source!r}: expected one of {SOURCES}')
  if source == 'auto':
    try:
      import music21  # pylint: disable=g-import-not-at-top,unused-import
      source = 'bach'
    except ImportError:
      source = 'procedural'
    logging.info('source=auto: using %s scores%s', source,
                 '' if source == 'bach' else ' (music21 is not installed)')
  return source


def _scores(source, num_pieces, max_seconds, seed, pmap) -> list[dict]:
  if source == 'procedural':
    return [_procedural_score(i, seed, max_seconds) for i in range(num_pieces)]
  paths, scores = _bach_paths(), []
  while len(scores) < num_pieces and paths:  # the first num_pieces that parse, in path order
    batch, paths = paths[:num_pieces - len(scores)], paths[num_pieces - len(scores):]
    scores += [s for s in pmap(_bach_score, batch)
               if s is not None and (s['onsets'] < max_seconds).any()]
  if len(scores) < num_pieces:
    raise ValueError(f'num_pieces={num_pieces}: the music21 corpus has only {len(scores)} '
                     'usable Bach chorales')
  return scores


def _check_instruments(instruments) -> tuple[str, ...]:
  instruments = (instruments,) if isinstance(instruments, str) else tuple(instruments)
  if (not instruments or len(set(instruments)) < len(instruments)
      or not set(instruments) <= set(specs.INSTRUMENTS)):
    raise ValueError(f'instruments={instruments}: expected distinct names from '
                     f'{", ".join(specs.INSTRUMENTS)}')
  return instruments


def write_corpus(out_dir: str | os.PathLike, *, num_pieces: int = 32, max_seconds: float = 20.0,
                 sample_rate: int | tuple[int, ...] = 44100, source: str = 'auto',
                 seed: int = 0, num_workers: int = 2, instruments=('piano',),
                 renderer: str = 'synth') -> str:
  """Writes the corpus into `out_dir`, atomically; returns the path of its CSV.

  Args:
    out_dir: must not exist or be empty; the corpus is built in a temporary sibling directory
      and renamed onto it when complete.
    num_pieces: pieces to write; piece i goes to 'validation' if i % 8 == 1, 'test' if
      i % 8 == 2, else 'train'.
    max_seconds: notes start before this time and are released by it; the audio adds the
      sound still ringing after that plus a TAIL of silence.
    sample_rate: Hz, or a sequence of rates cycled over the pieces.
    source: 'bach', 'procedural', or 'auto' (bach if music21 is installed).
    seed: >= 0; chooses the procedural scores, velocities and synthesiser phases.
    num_workers: processes for parsing and rendering (1: in this process).
    instruments: names from data.specs.INSTRUMENTS. ('piano',): the piano corpus, as above;
      otherwise every score is rendered by each, to `{year}/{name}.{instrument}.wav`, with one
      row per (score, instrument) (the scores' order, then `instruments`' order) and the CSV
      columns specs.CSV_COLUMNS + ('instrument',). The renderings of a score share its seed.
    renderer: 'synth' (data/synth.py) or 'fluidsynth' (the fluidsynth program and a General
      MIDI SoundFont, `fluidsynth()`; a one-line ValueError when either is missing).
  """
  out_dir = os.path.abspath(os.fspath(out_dir))
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
    raise FileExistsError(f'{out_dir}: corpus output exists and is not an empty directory')
  rates = [int(sample_rate)] if np.isscalar(sample_rate) else [int(r) for r in sample_rate]
  if num_pieces < 1 or max_seconds <= 0 or seed < 0 or not rates or min(rates) <= 0:
    raise ValueError(f'write_corpus: bad arguments num_pieces={num_pieces} max_seconds='
                     f'{max_seconds} seed={seed} sample_rate={sample_rate}')
  instruments = _check_instruments(instruments)
  if renderer not in RENDERERS:
    raise ValueError(f'renderer={renderer!r}: expected one of {", ".join(RENDERERS)}')
  programs = fluidsynth() if renderer == 'fluidsynth' else None
  paired = instruments != ('piano',)
  columns = specs.CSV_COLUMNS + (('instrument',) if paired else ())
  source = _resolve_source(source)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out_dir)}.partial-', dir=parent)
  try:
    with contextlib.ExitStack() as stack:
      pmap = map
      if num_workers > 1:
        pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=multiprocessing.get_context('spawn')))
        pmap = pool.map
      scores = _scores(source, num_pieces, max_seconds, seed, pmap)
      rows, jobs = [], []  # rows[i]: score i's, one per instrument
      for i, score in enumerate(scores):
        year = str(2004 + i % 4)
        os.makedirs(os.path.join(tmp, year), exist_ok=True)
        notes, pedals = _perform(score, i, seed, max_seconds)
        stem = f'{year}/{score["name"]}'
        row = {'canonical_composer': score['composer'], 'canonical_title': score['title'],
               'split': _split(i), 'year': year, 'midi_filename': f'{stem}.midi'}
        rows.append([{**row, 'audio_filename': f'{stem}.{name}.wav' if paired else f'{stem}.wav',
                      **({'instrument': name} if paired else {})} for name in instruments])
        jobs.append({'root': tmp, 'notes': notes, 'pedals': pedals, 'seed': seed + i,
                     'sample_rate': rates[i % len(rates)], 'midi_filename': row['midi_filename'],
                     'renderings': [(name, r['audio_filename']) for name, r in
                                    zip(instruments, rows[-1])],
                     'renderer': renderer, 'fluidsynth': programs})
      for i, duration in enumerate(pmap(_write_piece, jobs)):
        for r in rows[i]:
          r['duration'] = duration
        logging.info('%d/%d %s: %.1f s', i + 1, len(jobs),
                     rows[i][0]['midi_filename' if paired else 'audio_filename'], duration)
    csv_path = os.path.join(tmp, CSV_NAME)
    with open(csv_path, 'w', newline='', encoding='utf-8') as f:
      writer = csv.DictWriter(f, columns)
      writer.writeheader()
      writer.writerows(r for score_rows in rows for r in score_rows)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    if os.path.isdir(out_dir):
      os.rmdir(out_dir)  # empty (checked above); fails rather than clobber a new arrival
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return os.path.join(out_dir, CSV_NAME)


def _define_flags():
  """Command-line flags, defined only when this module is the program: importing it as a library
  must not claim flag names (data/prepare.py has its own --num_workers)."""
  flags.DEFINE_string('out', None, 'Directory to create (must not exist or be empty).',
                      required=True)
  flags.DEFINE_integer('num_pieces', 32, 'Pieces to write.')
  flags.DEFINE_float('max_seconds', 20.0, "Length of each piece's score, in seconds.")
  flags.DEFINE_list('sample_rate', ['44100'], 'Sample rate(s) in Hz, cycled over the pieces.')
  flags.DEFINE_enum('source', 'auto', SOURCES, 'Scores: Bach chorales (music21), procedural '
                    'studies, or auto (bach if music21 is installed).')
  flags.DEFINE_integer('seed', 0, 'Seed of the procedural scores, velocities and synthesis.')
  flags.DEFINE_integer('num_workers', 2, 'Worker processes.')
  flags.DEFINE_list('instruments', ['piano'], 'Instruments that play every score, from '
                    f'{",".join(specs.INSTRUMENTS)}; other than piano alone, the audio files '
                    'are {name}.{instrument}.wav and the CSV has an instrument column.')
  flags.DEFINE_enum('renderer', 'synth', RENDERERS, 'data/synth.py, or the fluidsynth program '
                    'with a General MIDI SoundFont (apt install fluidsynth fluid-soundfont-gm).')


def main(argv):
  del argv
  f = flags.FLAGS
  start = time.time()
  try:
    _check_instruments(f.instruments)
    if f.renderer == 'fluidsynth':
      fluidsynth()
  except ValueError as e:
    sys.exit(f'error: {e}')  # one line, no traceback: nothing went wrong inside
  try:
    csv_path = write_corpus(f.out, num_pieces=f.num_pieces, max_seconds=f.max_seconds,
                            sample_rate=[int(r) for r in f.sample_rate], source=f.source,
                            seed=f.seed, num_workers=f.num_workers,
                            instruments=f.instruments, renderer=f.renderer)
  except FileExistsError as e:
    sys.exit(f'error: {e}')  # one line, no traceback: nothing went wrong inside
  with open(csv_path, newline='', encoding='utf-8') as fh:
    rows = list(csv.DictReader(fh))
  for split in ('train', 'validation', 'test'):
    seconds = [float(r['duration']) for r in rows if r['split'] == split]
    scores = len({r['midi_filename'] for r in rows if r['split'] == split})
    also = f' ({scores} scores)' if scores != len(seconds) else ''
    print(f'{split}: {len(seconds)} pieces{also}, {sum(seconds):.1f} s')
  print(f'Wrote {csv_path} in {time.time() - start:.1f} s')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
