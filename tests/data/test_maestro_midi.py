"""The MIDI dataset (data/maestro_midi.py): whole pieces' notes per official split, equal to the
MIDI files' notes with the pedal applied, and the audio dataset's bad-file policy."""

import csv
import json
import os
import shutil

import numpy as np
import pytest

from data import maestro
from data import maestro_midi
from data import midi
from data import midi_events
from tests.conftest import bad_midi
from tests.conftest import missing_midi


def _rows(d):
  with open(maestro.find_csv(d), newline='') as f:
    return list(csv.DictReader(f))


def _write_rows(d, rows):
  with open(maestro.find_csv(d), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


@pytest.fixture(scope='module')
def built_midi(maestro_dir, tmp_path_factory):
  return maestro_midi.prepare(maestro_dir, str(tmp_path_factory.mktemp('tfds_midi')))


def test_pieces_per_split_hold_the_files_notes(built_midi, maestro_dir):
  source = built_midi.as_data_source()
  rows = {r['midi_filename']: r for r in _rows(maestro_dir)}
  assert {s: len(source[s]) for s in maestro.SPLITS} == {'train': 2, 'validation': 1, 'test': 1}
  for split in maestro.SPLITS:
    for ex in source[split]:
      name = ex['midi_filename'].decode()
      assert rows[name]['split'] == split
      assert ex['canonical_composer'].decode() == rows[name]['canonical_composer']
      assert ex['year'] == int(rows[name]['year'])
      notes, want = maestro_midi.notes_of(ex), midi.load_notes(os.path.join(maestro_dir, name))
      assert len(notes) == len(want) > 0
      np.testing.assert_allclose(notes.onsets, want.onsets, atol=5e-7, rtol=0)
      np.testing.assert_allclose(notes.offsets, want.offsets, atol=5e-7, rtol=0)
      np.testing.assert_array_equal(notes.pitches, want.pitches)
      np.testing.assert_array_equal(notes.velocities, want.velocities)
      # Readers encode them: events of the whole piece, which decode to its quantised notes.
      back = midi_events.decode(midi_events.encode(notes))
      np.testing.assert_allclose(back.onsets, midi_events.quantize(notes).onsets, atol=1e-9)
  with open(os.path.join(built_midi.data_dir, maestro.SOURCE_NAME)) as f:
    assert json.load(f)['manual_dir'] == os.path.abspath(maestro_dir)


def _bad_csv_value(d, row):
  rows = _rows(d)
  next(r for r in rows if r['midi_filename'] == row['midi_filename'])['year'] = 'MMIV'
  _write_rows(d, rows)
  return 'maestro-v3.0.0.csv:', 'bad row'


FAULTS = [bad_midi, missing_midi, _bad_csv_value]


@pytest.mark.parametrize('fault', FAULTS, ids=lambda f: f.__name__)
def test_a_bad_piece_fails_in_one_line_or_is_skipped_and_listed(fault, maestro_dir, tmp_path):
  d = str(tmp_path / 'm')
  shutil.copytree(maestro_dir, d)
  bad = next(r for r in _rows(d) if r['split'] == 'train')
  name, words = fault(d, bad)
  with pytest.raises(maestro.BadFileError) as e:
    maestro_midi.prepare(d, str(tmp_path / 'fail'))
  assert name in str(e.value) and words in str(e.value) and '\n' not in str(e.value)
  assert not maestro_midi.MaestroMidi(data_dir=str(tmp_path / 'fail')).is_prepared()
  b = maestro_midi.prepare(d, str(tmp_path / 'skip'), on_bad_file='skip')
  with open(os.path.join(b.data_dir, maestro.REPORT_NAME)) as f:
    report = json.load(f)['bad_files']
  assert len(report) == 1 and name in report[0]['fault'] and words in report[0]['fault']
  kept = b.as_data_source()
  assert len(kept['train']) == 1 and len(kept['test']) == 1
  assert kept['train'][0]['midi_filename'].decode() != bad['midi_filename']


def test_a_split_without_pieces_stops_preparation(maestro_dir, tmp_path):
  d = str(tmp_path / 'm')
  shutil.copytree(maestro_dir, d)
  bad_midi(d, next(r for r in _rows(d) if r['split'] == 'validation'))
  with pytest.raises(maestro.BadFileError, match="split 'validation' is empty: all 1 of its "
                                                 'pieces are bad'):
    maestro_midi.prepare(d, str(tmp_path / 'tfds'), on_bad_file='skip')
  with pytest.raises(ValueError, match="on_bad_file='nope'"):
    maestro_midi.MaestroMidi(on_bad_file='nope')
