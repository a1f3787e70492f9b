"""Tests of the embedded corpus writer (data/corpus.py)."""

import csv
import os
import re
import sys

import numpy as np
import pretty_midi
import pytest
from scipy import signal
import soundfile as sf

from data import corpus
from data import midi

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
