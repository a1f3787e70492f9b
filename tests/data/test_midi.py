"""Sustain pedal and frame features of data/midi.py."""

import numpy as np
import pretty_midi
import pytest

from data import midi

# Times below are multiples of 1/440 s, which pretty_midi's default 220 ticks per beat at
# 120 bpm represent exactly, so notes read back equal the notes written.


def _write(path, notes, pedals):
  midi.write_midi(path, midi.make_notes(*zip(*notes)), pedals)
  return path


def _as_dict(n):
  return {(round(on, 4), int(p)): round(off, 4) for on, off, p in zip(n.onsets, n.offsets,
                                                                       n.pitches)}


def test_sustain_pedal_holds_and_restrikes(tmp_path):
  notes = [
      (0.0, 0.1, 48, 60),  # released before the pedal goes down: unchanged
      (0.0, 0.5, 60, 80),  # released under the pedal: held until the pedal is released (2.0)
      (0.1, 0.3, 64, 70),  # released under the pedal, struck again at 1.0: ends at 1.0
      (1.0, 1.2, 64, 75),  # the re-strike: held until the pedal is released
      (0.5, 2.5, 67, 60),  # still held by its key when the pedal goes up: ends at its release
      (2.5, 3.0, 72, 90),  # after the pedal: unchanged
      (3.0, 3.5, 72, 90),  # struck again, no pedal
      (4.0, 4.5, 55, 50),  # released under a pedal that is never released: ends at 5.0
  ]
  path = _write(tmp_path / 'p.midi', notes, [(0.2, 2.0)])
  pm = pretty_midi.PrettyMIDI(str(path))
  pm.instruments[0].control_changes.append(pretty_midi.ControlChange(64, 100, 4.2))
  pm.instruments[0].control_changes.append(pretty_midi.ControlChange(64, 127, 5.0))
  pm.write(str(path))

  raw = _as_dict(midi.load_notes(path, sustain=False))
  assert raw == {(on, p): off for on, off, p, _ in notes}
  held = _as_dict(midi.load_notes(path))
  assert held == {(0.0, 48): 0.1, (0.0, 60): 2.0, (0.1, 64): 1.0, (1.0, 64): 2.0,
                  (0.5, 67): 2.5, (2.5, 72): 3.0, (3.0, 72): 3.5, (4.0, 55): 5.0}


def test_pedal_values_below_64_are_up(tmp_path):
  pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
  inst = pretty_midi.Instrument(0)
  inst.notes.append(pretty_midi.Note(80, 60, 0.0, 0.5))
  inst.notes.append(pretty_midi.Note(80, 62, 2.0, 2.5))
  for t, v in [(0.1, 63), (0.2, 64), (1.0, 100), (1.5, 30), (1.7, 0)]:
    inst.control_changes.append(pretty_midi.ControlChange(64, v, t))
  pm.instruments.append(inst)
  pm.write(str(tmp_path / 'v.midi'))
  assert midi.pedal_intervals(inst.control_changes) == [(0.2, 1.5)]
  assert _as_dict(midi.load_notes(tmp_path / 'v.midi'))[(0.0, 60)] == 1.5


def test_restrike_while_key_held_ends_the_first_note():
  n = midi.make_notes([0.0, 0.3], [1.0, 0.6], [60, 60], [80, 80])
  out = midi.apply_sustain(n, [])
  np.testing.assert_allclose(out.offsets, [0.3, 0.6])


def test_frame_features_grid():
  sr, hop = 16000, 500  # 32 frames per second
  n = midi.make_notes([0.0, 0.05, 0.5], [0.04, 0.5, 0.5001], [21, 60, 108], [10, 100, 127])
  f = midi.frame_features(n, num_frames=20, hop_length=hop, sample_rate=sr)
  assert f['pianoroll'].shape == (20, 88) and f['velocities'].dtype == np.uint8
  # Note 1: samples [0, 640) -> frames 0..1 (640 / 500 = 1.28).
  assert f['pianoroll'][:, 0].nonzero()[0].tolist() == [0, 1]
  assert f['onsets'][:, 0].nonzero()[0].tolist() == [0]
  # Note 2: samples [800, 8000) -> frames 1..15, onset in frame 1, velocity 100 throughout.
  assert f['pianoroll'][:, 60 - 21].nonzero()[0].tolist() == list(range(1, 16))
  assert f['onsets'][:, 60 - 21].nonzero()[0].tolist() == [1]
  assert set(f['velocities'][1:16, 60 - 21]) == {100} and f['velocities'][16, 60 - 21] == 0
  # Note 3: a very short note still occupies its onset frame (8000 -> frame 16).
  assert f['pianoroll'][:, 87].nonzero()[0].tolist() == [16]
  assert f['onsets'].sum() == 3


def test_frame_features_cut_at_num_frames():
  n = midi.make_notes([0.0, 10.0], [20.0, 11.0], [60, 61], [80, 80])
  f = midi.frame_features(n, num_frames=8, hop_length=1000, sample_rate=1000)
  assert f['pianoroll'][:, 60 - 21].all() and not f['pianoroll'][:, 61 - 21].any()


def test_load_notes_errors(tmp_path):
  with pytest.raises(midi.MidiError, match='missing'):
    midi.load_notes(tmp_path / 'none.midi')
  (tmp_path / 'bad.midi').write_bytes(b'MThd\x00\x00\x00\x06garbage' * 3)
  with pytest.raises(midi.MidiError, match='does not parse') as e:
    midi.load_notes(tmp_path / 'bad.midi')
  assert 'bad.midi' in str(e.value) and '\n' not in str(e.value)
  pretty_midi.PrettyMIDI().write(str(tmp_path / 'empty.midi'))
  with pytest.raises(midi.MidiError, match='no notes'):
    midi.load_notes(tmp_path / 'empty.midi')
