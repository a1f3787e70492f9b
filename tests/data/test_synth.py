"""Tests of the additive piano synthesiser (data/synth.py)."""

import numpy as np
import pytest

from data import midi
from data import synth

SR = 44100


def _note(pitch, velocity=80, onset=0.0, offset=1.0, num_seconds=1.5, sr=SR, seed=0):
  notes = midi.make_notes([onset], [offset], [pitch], [velocity])
  return synth.render(notes, sr, int(num_seconds * sr), seed=seed)  # [T, 2]


def _spectrum(x, sr, start, stop, pad=8):
  """Magnitude spectrum of the mono mix between two times, zero-padded for fine peaks."""
  seg = x[int(start * sr):int(stop * sr)].mean(1)
  mag = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), pad * len(seg)))
  return np.fft.rfftfreq(pad * len(seg), 1 / sr), mag


def _peak_near(freqs, mag, f, width):
  band = (freqs > f - width) & (freqs < f + width)
  return freqs[band][np.argmax(mag[band])]


def _centroid(x, sr):
  freqs, mag = _spectrum(x, sr, 0, len(x) / sr, pad=1)
  return float(np.sum(freqs * mag**2) / np.sum(mag**2))


def test_output_format_and_determinism():
  x = _note(60)
  assert x.dtype == np.float32 and x.shape == (int(1.5 * SR), 2)
  assert np.abs(x).max() <= 1 and np.abs(x).max() > 0.01
  np.testing.assert_array_equal(x, _note(60))
  assert not np.array_equal(x, _note(60, seed=1))  # phases and hammer noise follow the seed
  # Default length: until the last note has been damped.
  notes = midi.make_notes([0.0], [0.5], [60], [80])
  assert len(synth.render(notes, SR)) == int(np.ceil((0.5 + synth.RELEASE) * SR))
  assert not synth.render(midi.make_notes([], [], [], []), SR, 100).any()


def test_peak_at_f0_and_partials_sharp_by_inharmonicity():
  pitch = 84  # C6: stiff enough strings for the stretch to be many FFT bins wide
  f0 = synth.hz(pitch)
  b = synth.inharmonicity(pitch)
  x = _note(pitch, velocity=100)
  freqs, mag = _spectrum(x, SR, 0.02, 1.0)
  assert abs(freqs[np.argmax(mag)] - f0 * np.sqrt(1 + b)) < 1.0  # the strongest partial is f0
  for k in (2, 3):
    expected = k * f0 * np.sqrt(1 + b * k**2)
    measured = _peak_near(freqs, mag, expected, 0.3 * f0)
    assert abs(measured - expected) < 1.5, (k, measured, expected)
    assert measured - k * f0 > 0.8 * (expected - k * f0) > 5, (k, measured, k * f0)
  assert np.all(np.diff(synth.inharmonicity(np.arange(21, 109))) > 0)


def test_partials_stay_below_the_limit():
  for sr in (16000, 44100):
    for pitch in (21, 60, 108):
      f = synth.partial_frequencies(pitch, sr)
      assert 0 < len(f) <= synth.MAX_PARTIALS and f.max() < 0.45 * sr
  assert len(synth.partial_frequencies(33, 44100)) == synth.MAX_PARTIALS
  # No aliasing: almost nothing above the partial limit, even for a loud high note.
  x = _note(100, velocity=127, sr=16000)
  freqs, mag = _spectrum(x, 16000, 0, 1.1, pad=1)
  assert np.sum(mag[freqs > 0.46 * 16000]**2) < 1e-3 * np.sum(mag**2)


def test_louder_and_brighter_with_velocity():
  xs = [_note(60, velocity=v) for v in (25, 60, 95, 127)]
  rms = [np.sqrt(np.mean(x**2)) for x in xs]
  centroids = [_centroid(x, SR) for x in xs]
  assert np.all(np.diff(rms) > 0), rms
  assert rms[-1] / rms[0] > 10  # about 30 dB of dynamics
  assert np.all(np.diff(centroids) > 0), centroids
  assert centroids[-1] > 1.3 * centroids[0]


def test_silent_before_onset_and_damped_after_offset():
  on, off = 0.25, 0.75
  x = _note(57, onset=on, offset=off)
  t_on, t_off = int(on * SR), int(off * SR)
  assert not x[:t_on].any()
  assert np.abs(x[t_on:t_on + int(0.01 * SR)]).max() > 0.01
  assert not x[t_off + int(synth.RELEASE * SR):].any()  # the damper fades to exactly zero
  before = np.sqrt(np.mean(x[t_off - 2000:t_off]**2))
  after = np.sqrt(np.mean(x[t_off + 2000:t_off + 4000]**2))
  assert after < 0.3 * before


def test_sustained_note_decays_high_partials_first():
  x = _note(48, velocity=110, offset=4.0, num_seconds=4.0)
  early, late = x[int(0.05 * SR):int(0.3 * SR)], x[int(2.5 * SR):int(2.75 * SR)]
  assert np.sqrt(np.mean(late**2)) < 0.5 * np.sqrt(np.mean(early**2))
  assert _centroid(late, SR) < 0.8 * _centroid(early, SR)
  # Higher notes die away faster.
  hi = _note(84, velocity=110, offset=4.0, num_seconds=4.0)
  ratio = lambda y: np.sqrt(np.mean(y[int(2.5 * SR):int(2.75 * SR)]**2) /
                            np.mean(y[int(0.05 * SR):int(0.3 * SR)]**2))
  assert ratio(hi) < 0.5 * ratio(x)


@pytest.mark.parametrize('pitch,louder', [(30, 0), (64, None), (100, 1)])
def test_pan_follows_pitch(pitch, louder):
  energy = np.sum(_note(pitch)**2, axis=0)  # [2]
  if louder is None:
    assert abs(energy[0] / energy[1] - 1) < 0.1
  else:
    assert energy[louder] > 2 * energy[1 - louder]


def test_notes_add_up_and_cut_at_num_samples():
  notes = midi.make_notes([0.0, 0.3], [1.0, 1.0], [60, 67], [80, 80])
  both = synth.render(notes, SR, SR)
  one = synth.render(midi.make_notes([0.0], [1.0], [60], [80]), SR, SR)
  other = synth.render(midi.make_notes([0.3], [1.0], [67], [80]), SR, SR)
  np.testing.assert_allclose(both, one + other, atol=1e-6)
  short = synth.render(notes, SR, SR // 2)
  # Equal up to float32 rounding: numpy's vectorised sin rounds the last bit differently with
  # the array's length (measured: 1.1e-8 at most, against 3.1e-5 for one 16-bit step).
  np.testing.assert_allclose(short, both[:SR // 2], rtol=0, atol=1e-7)
