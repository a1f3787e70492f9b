"""Performance events (data/midi_events.py): the vocabulary's layout, MAESTRO-style MIDI round
trips through the events to 10 ms with the sustain pedal applied, robust decoding, and the
augmentation."""

import numpy as np
import pytest

from data import midi
from data import midi_events as ev


def test_vocabulary_layout_and_a_hand_encoded_performance():
  assert (ev.NOTE_ON, ev.NOTE_OFF, ev.TIME_SHIFT, ev.VELOCITY, ev.VOCAB_SIZE) == (
      0, 128, 256, 356, 388)
  notes = midi.make_notes([0.0, 0.5, 0.503], [0.5, 2.7, 1.0], [60, 60, 64], [80, 80, 100])
  shift = lambda s: ev.TIME_SHIFT + s - 1
  expected = [
      ev.VELOCITY + 19, 60,  # velocity 80: bin (80 - 1) // 4 + 1 = 20
      shift(50), ev.NOTE_OFF + 60, 60,  # the key ends and is struck again at 0.5 s, same bin
      ev.VELOCITY + 24, 64,  # 0.503 s rounds to 0.50; velocity 100: bin 25
      shift(50), ev.NOTE_OFF + 64,
      shift(100), shift(70), ev.NOTE_OFF + 60]  # 1.7 s: two shifts
  np.testing.assert_array_equal(ev.encode(notes), expected)


def _maestro_style_notes(rng, n=120):
  """Random piano notes off the 10-ms grid, some re-strikes, with the sustain pedal down over
  two stretches, written and read back as MAESTRO's MIDI is (data/midi.py)."""
  onsets = np.sort(rng.uniform(0, 12, n))
  notes = midi.make_notes(onsets, onsets + rng.uniform(0.003, 1.5, n),
                          rng.integers(21, 109, n), rng.integers(1, 128, n))
  return notes, [(1.013, 3.487), (6.2, 9.75)]


def test_maestro_style_midi_round_trips_to_10_ms_with_the_pedal_applied(tmp_path):
  rng = np.random.default_rng(0)
  keys, pedals = _maestro_style_notes(rng)
  midi.write_midi(tmp_path / 'piece.midi', keys, pedals)
  notes = midi.load_notes(tmp_path / 'piece.midi')  # the sustain pedal applied
  events = ev.encode(notes)
  assert events.min() >= 0 and events.max() < ev.VOCAB_SIZE
  back = ev.decode(events)
  want = ev.quantize(notes)
  assert len(back) == len(want) and len(want) >= len(notes) - 2  # few same-step re-strikes
  np.testing.assert_allclose(back.onsets, want.onsets, atol=1e-9)
  np.testing.assert_allclose(back.offsets, want.offsets, atol=1e-9)
  np.testing.assert_array_equal(back.pitches, want.pitches)
  np.testing.assert_array_equal(back.velocities, want.velocities)
  # Against the unquantised notes: onsets to within 5 ms, velocities to within 3.
  match = {(p, round(o, 2)): (o, v) for o, p, v in zip(notes.onsets, notes.pitches,
                                                       notes.velocities)}
  for o, p, v in zip(back.onsets, back.pitches, back.velocities):
    o0, v0 = match[(p, round(o, 2))]
    assert abs(o - o0) <= 0.005 + 1e-9 and 0 <= v0 - v <= 3
  # The pedal holds: some note whose key was released under it sounds to the pedal's release.
  assert np.any(np.isclose(back.offsets, 3.49)) and np.any(np.isclose(back.offsets, 9.75))
  # Every note-on is preceded by its velocity: decoding with another default changes nothing.
  np.testing.assert_array_equal(ev.decode(events, default_velocity=1).velocities,
                                back.velocities)


def test_two_strikes_in_one_step_keep_the_last_and_short_notes_last_one_step():
  notes = midi.make_notes([1.0, 1.003, 2.0], [1.002, 1.8, 2.001], [60, 60, 62], [10, 90, 50])
  back = ev.decode(ev.encode(notes))
  np.testing.assert_allclose(back.onsets, [1.0, 2.0])
  np.testing.assert_allclose(back.offsets, [1.8, 2.01])
  np.testing.assert_array_equal(back.velocities, [89, 49])


def test_decoding_a_models_samples():
  on, off, shift, vel = ev.NOTE_ON, ev.NOTE_OFF, ev.TIME_SHIFT, ev.VELOCITY
  events = [off + 50,  # a silent key's NOTE_OFF: ignored
            60, shift + 9, 60,  # struck again while sounding: the first ends at 0.1 s
            vel + 31, 62, shift + 4]  # sounding at the end: ends at the last time, 0.15 s
  back = ev.decode(events)
  np.testing.assert_allclose(back.onsets, [0.0, 0.1, 0.1])
  np.testing.assert_allclose(back.offsets, [0.1, 0.15, 0.15])
  np.testing.assert_array_equal(back.pitches, [60, 60, 62])
  np.testing.assert_array_equal(back.velocities, [64, 64, 125])  # the default, then bin 32
  assert len(ev.decode([])) == 0
  with pytest.raises(ValueError, match='event 388 at position 1: expected 0..387'):
    ev.decode([on + 3, 388])


def test_augmentation_transposes_and_stretches():
  notes = midi.make_notes([0.5, 1.0], [1.0, 2.0], [21, 108], [64, 64])
  moved = ev.augment(notes, 3, 1.05)
  np.testing.assert_array_equal(moved.pitches, [24, 111])
  np.testing.assert_allclose(moved.onsets, [0.525, 1.05])
  np.testing.assert_allclose(moved.offsets, [1.05, 2.1])
  assert set(ev.TRANSPOSITIONS) == set(range(-3, 4))
  assert ev.STRETCHES == (0.95, 0.975, 1.0, 1.025, 1.05)
  draws = {(int(a.pitches[0]) - 21, round(float(a.onsets[0]) / 0.5, 3)) for a in (
      ev.random_augment(notes, np.random.default_rng(i)) for i in range(200))}
  assert {t for t, _ in draws} == set(ev.TRANSPOSITIONS)
  assert {s for _, s in draws} == set(ev.STRETCHES)
  with pytest.raises(ValueError, match='transpose=-30 takes MIDI keys 21..108 outside 0..127'):
    ev.augment(notes, -30)
  with pytest.raises(ValueError, match=r'MIDI keys 0..130: expected 0..127'):
    ev.encode(midi.make_notes([0, 1], [1, 2], [0, 130], [5, 5]))
