"""Tests of the embedded corpus writer (data/corpus.py)."""

import csv
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pretty_midi
import pytest
from scipy import signal
import soundfile as sf

from data import corpus
from data import midi
from data import specs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RATES = (44100, 48000)


def _rows(csv_path):
  with open(csv_path, newline='', encoding='utf-8') as f:
    return list(csv.DictReader(f))


def _files(root):
  """{relative path: bytes} of every file under root."""
  out = {}
  for d, _, names in os.walk(root):
    for n in names:
      with open(os.path.join(d, n), 'rb') as f:
        out[os.path.relpath(os.path.join(d, n), root)] = f.read()
  return out


@pytest.fixture(scope='module')
def procedural(tmp_path_factory):
  out = tmp_path_factory.mktemp('corpus') / 'procedural'
  csv_path = corpus.write_corpus(out, num_pieces=3, max_seconds=5.0, sample_rate=RATES,
                                 source='procedural', seed=3, num_workers=2)
  return out, csv_path


def test_csv_has_maestro_columns_and_split_rule(procedural):
  out, csv_path = procedural
  assert csv_path == os.path.join(str(out), 'maestro-v3.0.0.csv')
  with open(csv_path, newline='', encoding='utf-8') as f:
    assert next(csv.reader(f)) == ['canonical_composer', 'canonical_title', 'split', 'year',
                                   'midi_filename', 'audio_filename', 'duration']
  rows = _rows(csv_path)
  assert [r['split'] for r in rows] == ['train', 'validation', 'test']
  assert [r['year'] for r in rows] == ['2004', '2005', '2006']
  assert {r['canonical_composer'] for r in rows} == {corpus.PROCEDURAL_COMPOSER}
  assert len({r['canonical_title'] for r in rows}) == 3
  for r in rows:
    assert r['midi_filename'].startswith(r['year'] + '/') and r['midi_filename'].endswith('.midi')
    assert r['audio_filename'] == r['midi_filename'][:-len('.midi')] + '.wav'
  assert sorted(os.listdir(out)) == ['2004', '2005', '2006', 'maestro-v3.0.0.csv']


def test_wavs_are_16_bit_stereo_at_cycled_rates(procedural):
  out, csv_path = procedural
  for i, r in enumerate(_rows(csv_path)):
    info = sf.info(os.path.join(out, r['audio_filename']))
    assert (info.channels, info.subtype, info.format) == (2, 'PCM_16', 'WAV')
    assert info.samplerate == RATES[i % 2]
    assert info.frames / info.samplerate == float(r['duration'])
    # The audio is the sounding MIDI plus a one-second tail, normalised to -1 dBFS.
    notes = midi.load_notes(os.path.join(out, r['midi_filename']))
    assert abs(float(r['duration']) - notes.end_time - corpus.TAIL) <= 1 / info.samplerate
    assert notes.end_time <= 5.0
    x, _ = sf.read(os.path.join(out, r['audio_filename']), dtype='int16')
    assert abs(np.abs(x.astype(np.int32)).max() - 32768 * 10**(-1 / 20)) <= 1
    assert np.abs(x[-int(0.5 * info.samplerate):]).max() == 0  # the damped tail is silent


def test_midi_has_pedal_and_restrikes_under_it(procedural):
  out, csv_path = procedural
  for r in _rows(csv_path):
    path = os.path.join(out, r['midi_filename'])
    inst, = pretty_midi.PrettyMIDI(path).instruments
    values = [c.value for c in inst.control_changes if c.number == 64]
    assert values and max(values) >= 64 and min(values) < 64
    keys = midi.load_notes(path, sustain=False)
    sounding = midi.load_notes(path, sustain=True)
    assert len(keys) == len(sounding)  # no two presses of a key at one instant
    assert np.all((keys.pitches >= 21) & (keys.pitches <= 108))
    assert np.all(sounding.offsets >= keys.offsets)
    assert np.sum(sounding.offsets > keys.offsets + 0.05) > len(keys) // 4  # pedal held them
    # Re-strikes under the pedal: a held note cut short by the next press of its key.
    restrikes = 0
    for p in np.unique(keys.pitches):
      i = np.flatnonzero(keys.pitches == p)
      restrikes += np.sum((sounding.offsets[i[:-1]] == keys.onsets[i[1:]])
                          & (keys.offsets[i[:-1]] < keys.onsets[i[1:]]))
    assert restrikes > 0
    # Pedal released exactly on bar lines, where notes start.
    ups = [u for _, u in midi.pedal_intervals(inst.control_changes)][:-1]
    assert np.all(np.min(np.abs(np.subtract.outer(ups, keys.onsets)), axis=1) < 1e-3)
    # Velocities differ by voice and are humanised.
    assert len(np.unique(keys.velocities)) > 5


def _flux(x, sr, times):
  """Spectral flux (summed rises of log magnitude) near each time, over its median."""
  hop = sr // 200  # 5 ms frames, frame j centred on sample j * hop
  _, _, z = signal.stft(x.astype(np.float64).mean(1), sr, nperseg=512, noverlap=512 - hop)
  rise = np.maximum(np.diff(np.log10(np.abs(z) + 0.1), axis=1), 0).sum(0)  # [T - 1]
  flux = np.concatenate([[0], rise])  # [T] rise into frame j
  f = np.round(np.asarray(times) * sr / hop).astype(int)
  return np.array([flux[max(j - 2, 0):j + 3].max() for j in f]) / np.median(flux)


def test_midi_onsets_coincide_with_energy_rises(procedural):
  out, csv_path = procedural
  for r in _rows(csv_path):
    x, sr = sf.read(os.path.join(out, r['audio_filename']), dtype='int16')
    onsets = np.unique(midi.load_notes(os.path.join(out, r['midi_filename'])).onsets)
    at = _flux(x, sr, onsets)
    between = _flux(x, sr, (onsets[:-1] + onsets[1:]) / 2)
    # Every onset of the MIDI file is sharper than any moment halfway between two onsets.
    assert at.min() > between.max() and np.median(at) > 5 * np.median(between), (at, between)


def test_same_arguments_same_bytes_for_any_num_workers(procedural, tmp_path):
  out, _ = procedural
  again = tmp_path / 'again'
  again.mkdir()  # an existing empty directory is fine
  corpus.write_corpus(again, num_pieces=3, max_seconds=5.0, sample_rate=RATES,
                      source='procedural', seed=3, num_workers=1)
  first, second = _files(out), _files(again)
  assert sorted(first) == sorted(second) and len(first) == 7
  for name in first:
    assert first[name] == second[name], name
  assert not [n for n in os.listdir(tmp_path) if n != 'again']  # no temporary left behind


def test_seed_changes_the_pieces(tmp_path):
  csv_a = corpus.write_corpus(tmp_path / 'a', num_pieces=1, max_seconds=3.0,
                              source='procedural', seed=0, num_workers=1)
  csv_b = corpus.write_corpus(tmp_path / 'b', num_pieces=1, max_seconds=3.0,
                              source='procedural', seed=1, num_workers=1)
  notes = [midi.load_notes(os.path.join(os.path.dirname(c), _rows(c)[0]['midi_filename']))
           for c in (csv_a, csv_b)]
  assert len(notes[0]) != len(notes[1]) or np.any(notes[0].pitches != notes[1].pitches)


def test_refuses_a_non_empty_out_dir(tmp_path):
  out = tmp_path / 'full'
  out.mkdir()
  (out / 'keep.txt').write_text('precious')
  with pytest.raises(FileExistsError, match=re.escape(str(out))):
    corpus.write_corpus(out, num_pieces=1, max_seconds=2.0, source='procedural', num_workers=1)
  assert os.listdir(out) == ['keep.txt']
  with pytest.raises(ValueError, match='source'):
    corpus.write_corpus(tmp_path / 'x', source='mozart')


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
  real, calls = corpus._write_piece, []

  def write_then_fail(job):  # the second piece fails after the first was written
    calls.append(job)
    if len(calls) == 2:
      raise RuntimeError('disk full')
    return real(job)

  monkeypatch.setattr(corpus, '_write_piece', write_then_fail)
  with pytest.raises(RuntimeError, match='disk full'):
    corpus.write_corpus(tmp_path / 'out', num_pieces=3, max_seconds=2.0, source='procedural',
                        num_workers=1)
  assert os.listdir(tmp_path) == []


def test_auto_falls_back_to_procedural_without_music21(monkeypatch):
  monkeypatch.setitem(sys.modules, 'music21', None)  # `import music21` now fails
  assert corpus._resolve_source('auto') == 'procedural'


def test_bach_chorales(tmp_path):
  music21 = pytest.importorskip('music21')
  csv_path = corpus.write_corpus(tmp_path / 'bach', num_pieces=3, max_seconds=4.0,
                                 source='bach', num_workers=2)
  rows = _rows(csv_path)
  expected = sorted(str(p) for p in music21.corpus.getComposer('bach')
                    if str(p).endswith(('.mxl', '.xml', '.musicxml', '.krn')))[:3]
  stems = [os.path.splitext(os.path.basename(p))[0] for p in expected]
  assert [r['midi_filename'] for r in rows] == [
      f'{2004 + i}/bach_{s}.midi' for i, s in enumerate(stems)]
  assert {r['canonical_composer'] for r in rows} == {corpus.BACH_COMPOSER}
  assert all('BWV ' + s[3:] in r['canonical_title'] for r, s in zip(rows, stems))
  for r in rows:
    notes = midi.load_notes(os.path.join(tmp_path, 'bach', r['midi_filename']), sustain=False)
    assert len(notes) >= 10 and notes.onsets.max() < 4.0
    assert np.all((notes.pitches >= 21) & (notes.pitches <= 108))
    assert sf.info(os.path.join(tmp_path, 'bach', r['audio_filename'])).samplerate == 44100


# ---------------------------------------------------------------------------------------------
# Instruments and renderers.


# The default (piano) corpus of test_the_piano_corpus_is_pinned as written before there were
# other instruments: the MIDI files' and the CSV's sha256, and per wav (frames, sum |x|, x at 8
# evenly spaced frames).
PIANO_CORPUS_TEXT_SHA256 = '4ffc48e9ea311231556c27caf4f6b3775f1069a76e82474adf29670f2751ab54'
PIANO_CORPUS_WAVS = {
    '2004/procedural_000.wav': (48000, 165631866, [[60, -3], [1823, 1998], [1071, 892],
                                                   [380, 15], [-333, -469]] + [[0, 0]] * 3),
    '2005/procedural_001.wav': (48000, 231103910, [[634, 730], [-7431, -6888], [-4142, -3139],
                                                   [64, 884], [560, 689]] + [[0, 0]] * 3),
}


def test_the_piano_corpus_is_pinned(tmp_path):
  """The default (piano) corpus as written before there were other instruments (prepared
  datasets in users' caches depend on it): its MIDI and CSV byte for byte, its audio to one
  least significant bit (float32 rounding may differ with another BLAS kernel)."""
  corpus.write_corpus(tmp_path / 'c', num_pieces=2, max_seconds=2.0, sample_rate=16000,
                      source='procedural', seed=5, num_workers=1)
  files = _files(tmp_path / 'c')
  assert sorted(files) == [
      '2004/procedural_000.midi', '2004/procedural_000.wav', '2005/procedural_001.midi',
      '2005/procedural_001.wav', 'maestro-v3.0.0.csv']
  h = hashlib.sha256()
  for name in ('2004/procedural_000.midi', '2005/procedural_001.midi', 'maestro-v3.0.0.csv'):
    h.update(name.encode())
    h.update(files[name])
  assert h.hexdigest() == PIANO_CORPUS_TEXT_SHA256
  for name, (frames, total, samples) in PIANO_CORPUS_WAVS.items():
    x, rate = sf.read(tmp_path / 'c' / name, dtype='int16')
    assert rate == 16000 and len(x) == frames
    assert abs(int(np.abs(x.astype(np.int64)).sum()) - total) <= len(x)
    np.testing.assert_allclose(x[np.linspace(0, len(x) - 1, 8).astype(int)], samples, atol=1)


@pytest.fixture(scope='module')
def paired(tmp_path_factory):
  out = tmp_path_factory.mktemp('corpus') / 'paired'
  csv_path = corpus.write_corpus(out, num_pieces=3, max_seconds=3.0, sample_rate=16000,
                                 source='procedural', seed=7, num_workers=2,
                                 instruments=specs.INSTRUMENTS)
  return out, csv_path


def test_paired_corpus_has_a_row_per_score_and_instrument(paired):
  out, csv_path = paired
  with open(csv_path, newline='', encoding='utf-8') as f:
    assert tuple(next(csv.reader(f))) == specs.CSV_COLUMNS + ('instrument',)
  rows = _rows(csv_path)
  assert len(rows) == 3 * len(specs.INSTRUMENTS)
  assert [r['instrument'] for r in rows] == list(specs.INSTRUMENTS) * 3
  scores = [rows[i:i + len(specs.INSTRUMENTS)] for i in range(0, len(rows), 5)]
  for score, split in zip(scores, ['train', 'validation', 'test']):
    midi_filename = score[0]['midi_filename']
    assert midi_filename.endswith('.midi')
    for r in score:  # one score: one MIDI file, split, title and length
      assert (r['midi_filename'], r['split'], r['duration'], r['canonical_title']) == (
          midi_filename, split, score[0]['duration'], score[0]['canonical_title'])
      assert r['audio_filename'] == f'{midi_filename[:-len(".midi")]}.{r["instrument"]}.wav'
      info = sf.info(os.path.join(out, r['audio_filename']))
      assert (info.channels, info.subtype, info.samplerate) == (2, 'PCM_16', 16000)
      assert info.frames / info.samplerate == float(r['duration'])
  names = sorted(_files(out))
  assert len(names) == 1 + 3 * (1 + len(specs.INSTRUMENTS)) and 'maestro-v3.0.0.csv' in names
  assert not [n for n in names if n.endswith('.wav') and n.count('.') != 2]  # no piano-only name
  # The same performance: the renderings differ, the MIDI file is shared.
  first = [sf.read(os.path.join(out, r['audio_filename']), dtype='int16')[0] for r in scores[0]]
  assert all(not np.array_equal(first[0], x) for x in first[1:])


def _novelty(x, sr, hop):
  """Spectral flux: summed rises of log magnitude as each hop of audio enters a 4-hop window;
  value j belongs to sample j * hop, where the entering hop starts. The floor is low (-120 dB),
  so that the first, quiet hop of a slow attack (the strings') already counts."""
  n = 4 * hop
  x = np.pad(x.astype(np.float64).mean(1), (n, 0))
  _, _, z = signal.stft(x, sr, nperseg=n, noverlap=n - hop, boundary=None, padded=False)
  return np.maximum(np.diff(np.log10(np.abs(z) + 1e-6), axis=1), 0).sum(0)  # [J]


def _detected_onsets(x, sr, onsets, hop=128):
  """For each onset (samples), the strongest flux between the midpoints to its neighbours, and
  its peak flux over the median flux away (> 50 ms) from every onset."""
  nov = _novelty(x, sr, hop)
  t = np.arange(len(nov)) * hop
  edges = np.concatenate([[onsets[0] - 0.1 * sr], (onsets[1:] + onsets[:-1]) / 2,
                          [onsets[-1] + 0.1 * sr]])
  found = np.array([t[(t >= lo) & (t < hi)][np.argmax(nov[(t >= lo) & (t < hi)])]
                    for lo, hi in zip(edges[:-1], edges[1:])])
  away = np.min(np.abs(np.subtract.outer(t, onsets)), axis=1) > 0.05 * sr
  return found, np.median(nov[np.isin(t, found)]) / np.median(nov[away])


def test_paired_renderings_share_the_midi_onsets(paired):
  """Every instrument's spectral-flux onsets lie within one 512-sample hop (the 16k dataset's
  frame) of the MIDI onsets, and so of each other's."""
  out, csv_path = paired
  rows = _rows(csv_path)
  for midi_filename in sorted({r['midi_filename'] for r in rows}):
    onsets = np.unique(midi.load_notes(os.path.join(out, midi_filename)).onsets) * 16000
    found = {}
    for r in rows:
      if r['midi_filename'] == midi_filename:
        x, sr = sf.read(os.path.join(out, r['audio_filename']), dtype='int16')
        found[r['instrument']], contrast = _detected_onsets(x / 32768, sr, onsets)
        assert np.abs(found[r['instrument']] - onsets).max() <= 512, (r, found, onsets)
        assert contrast > 1.5, (r['audio_filename'], contrast)  # strings: 2.4 at least
        # The detector can tell: the same audio two hops late is off.
        late, _ = _detected_onsets(np.pad(x / 32768, ((1024, 0), (0, 0))), sr, onsets)
        assert np.abs(late - onsets).max() > 512
    spread = np.ptp(np.stack(list(found.values())), axis=0)  # [onsets] across instruments
    assert spread.max() <= 512, (midi_filename, spread)


def test_paired_corpus_same_bytes_for_any_num_workers(paired, tmp_path):
  out, _ = paired
  corpus.write_corpus(tmp_path / 'again', num_pieces=3, max_seconds=3.0, sample_rate=16000,
                      source='procedural', seed=7, num_workers=1,
                      instruments=specs.INSTRUMENTS)
  assert _files(out) == _files(tmp_path / 'again')


def test_bad_instruments_and_renderers_are_refused(tmp_path):
  for instruments in [('piano', 'viola'), (), ('organ', 'organ')]:
    with pytest.raises(ValueError, match=r'instruments=.*piano, organ, harpsichord'):
      corpus.write_corpus(tmp_path / 'x', num_pieces=1, max_seconds=1.0,
                          source='procedural', num_workers=1, instruments=instruments)
  with pytest.raises(ValueError, match='renderer=.timidity.*synth, fluidsynth'):
    corpus.write_corpus(tmp_path / 'x', num_pieces=1, max_seconds=1.0, source='procedural',
                        num_workers=1, renderer='timidity')
  assert os.listdir(tmp_path) == []


def _fluidsynth_error(tmp_path, words):
  with pytest.raises(ValueError) as e:
    corpus.write_corpus(tmp_path / 'x', num_pieces=1, max_seconds=1.0, source='procedural',
                        num_workers=1, renderer='fluidsynth')
  message = str(e.value)
  assert '\n' not in message and 'apt install fluidsynth fluid-soundfont-gm' in message
  for w in words:
    assert w in message, message
  assert os.listdir(tmp_path) == ['bin']  # nothing written


# A stand-in for the fluidsynth program: logs its arguments and the MIDI programs it was given,
# and writes a 440 Hz tone as long as the MIDI file.
_FAKE_FLUIDSYNTH = '''#!{python}
import json, math, os, struct, sys, wave
import mido
args = sys.argv[1:]
rate, out = int(args[args.index('-r') + 1]), args[args.index('-F') + 1]
mid = mido.MidiFile(args[-1])
programs = [m.program for t in mid.tracks for m in t if m.type == 'program_change']
with open(os.environ['FAKE_FLUIDSYNTH_LOG'], 'a') as f:
  f.write(json.dumps({{'programs': programs, 'soundfont': args[-2]}}) + '\\n')
with wave.open(out, 'wb') as w:
  w.setnchannels(2); w.setsampwidth(2); w.setframerate(rate)
  n = int(mid.length * rate)
  w.writeframes(b''.join(struct.pack('<hh', v, v) for v in
                         (int(3000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n))))
'''


def test_fluidsynth_renderer(tmp_path, monkeypatch):
  (tmp_path / 'bin').mkdir()
  monkeypatch.setenv('PATH', str(tmp_path / 'bin'))  # no fluidsynth on it
  _fluidsynth_error(tmp_path, ['the fluidsynth program is not on PATH'])
  fake = tmp_path / 'bin' / 'fluidsynth'
  fake.write_text(_FAKE_FLUIDSYNTH.format(python=sys.executable))
  fake.chmod(0o755)
  monkeypatch.setenv(corpus.SOUNDFONT_ENV, str(tmp_path / 'missing.sf2'))
  _fluidsynth_error(tmp_path, [f'{corpus.SOUNDFONT_ENV}=', 'missing.sf2 is not a file'])
  monkeypatch.delenv(corpus.SOUNDFONT_ENV)
  monkeypatch.setattr(corpus, 'SOUNDFONTS', (str(tmp_path / 'nowhere' / 'FluidR3_GM.sf2'),))
  _fluidsynth_error(tmp_path, ['no General MIDI SoundFont', 'nowhere/FluidR3_GM.sf2'])

  # With both: every instrument rendered by its General MIDI program.
  soundfont = tmp_path / 'bin' / 'GM.sf2'  # any file does for the stand-in
  soundfont.write_bytes(b'')
  monkeypatch.setattr(corpus, 'SOUNDFONTS', (str(tmp_path / 'nowhere.sf2'), str(soundfont)))
  monkeypatch.setenv('FAKE_FLUIDSYNTH_LOG', str(tmp_path / 'log'))
  csv_path = corpus.write_corpus(tmp_path / 'out', num_pieces=1, max_seconds=2.0,
                                 sample_rate=16000, source='procedural', num_workers=1,
                                 instruments=('mallet', 'organ', 'piano'),
                                 renderer='fluidsynth')
  with open(tmp_path / 'log') as f:
    calls = [json.loads(line) for line in f]
  assert [c['programs'] for c in calls] == [[12], [19], [0]]
  assert {c['soundfont'] for c in calls} == {str(soundfont)}
  for r in _rows(csv_path):
    x, sr = sf.read(os.path.join(tmp_path, 'out', r['audio_filename']), dtype='int16')
    assert len(x) == float(r['duration']) * sr  # cut or padded to the synthesiser's length
    assert abs(np.abs(x.astype(np.int32)).max() - 32768 * 10**(-1 / 20)) <= 1
    assert np.argmax(np.abs(np.fft.rfft(x[:sr, 0]))) == 440  # Hz: the stand-in's tone
  # The MIDI file itself keeps the piano program.
  midi_path = os.path.join(tmp_path, 'out', _rows(csv_path)[0]['midi_filename'])
  assert pretty_midi.PrettyMIDI(midi_path).instruments[0].program == 0


@pytest.mark.parametrize('flag,words', [
    ('--instruments=organ,viola', ['instruments=', 'viola', 'harpsichord']),
    ('--renderer=fluidsynth', ['fluidsynth', 'apt install fluidsynth fluid-soundfont-gm'])])
def test_cli_bad_instruments_and_missing_fluidsynth_are_one_line(tmp_path, flag, words):
  env = {**os.environ, 'PATH': os.path.dirname(sys.executable)}  # python, no fluidsynth
  done = subprocess.run([sys.executable, '-m', 'data.corpus', f'--out={tmp_path / "c"}', flag],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode != 0
  last = done.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'Traceback' not in done.stderr
  for w in words:
    assert w in last, done.stderr
  assert not os.path.exists(tmp_path / 'c')
