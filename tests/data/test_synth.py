"""Tests of the additive synthesiser (data/synth.py): the piano, then the other instruments."""


import numpy as np
import pytest
from scipy import signal

from data import midi
from data import specs
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


# ---------------------------------------------------------------------------------------------
# The instruments.

INSTRUMENTS = specs.INSTRUMENTS
LOW_SR = 16000


# Taken from the synthesiser before it had other instruments, for the notes below: (args,
# kwargs, the energy sum(x^2), x at 12 evenly spaced samples [left, right]).
PIANO_PINS = [
    ((16000,), {}, 35.72551971, [
        [-0.0072850, -0.0023689], [0.0011099, 0.0023304], [0.0572189, 0.0681939],
        [-0.0266899, -0.0076073], [0.0293736, 0.0127583], [0.0231485, 0.0095090],
        [0.0150510, -0.0038861], [0.0582986, 0.0417188], [0.0149228, 0.0121434],
        [-0.0015532, -0.0013212], [-0.0003274, -0.0002969], [0.0, 0.0]]),
    ((22050, 9000), {'seed': 3, 'instrument': 'piano'}, 47.80766113, [
        [-0.0016948, -0.0005488], [0.1277695, 0.0438338], [0.1371540, 0.0444040],
        [0.0651298, 0.0445624], [0.0508014, 0.0197500], [0.0183786, -0.0021320],
        [-0.0136553, -0.0061683], [0.0016784, -0.0051150], [-0.0292113, -0.0207074],
        [0.0329755, 0.0299045], [0.0211530, 0.0147214], [-0.0233343, -0.0143210]]),
]


def test_piano_output_is_pinned():
  """The piano of every existing corpus and cached dataset is unchanged: its energy and samples
  as the synthesiser gave them before it had other instruments (to float32 rounding, which
  another BLAS kernel may do differently)."""
  notes = midi.make_notes([-0.05, 0.0, 0.02, 0.1, 0.1, 0.25, 0.3, 0.31],
                          [0.2, 0.4, 0.15, 0.35, 0.2, 0.5, 0.32, 0.45],
                          [40, 21, 60, 67, 108, 60, 84, 95], [1, 127, 30, 64, 100, 90, 10, 50])
  for args, kwargs, energy, samples in PIANO_PINS:
    x = synth.render(notes, *args, **kwargs)
    np.testing.assert_allclose(np.sum(x.astype(np.float64) ** 2), energy, rtol=1e-6)
    idx = np.linspace(0, len(x) - 1, 12).astype(int)
    np.testing.assert_allclose(x[idx], samples, atol=2e-7)


def test_unknown_instrument_names_the_valid_ones():
  with pytest.raises(ValueError, match='instrument=.viola.*' + '.*'.join(INSTRUMENTS)):
    synth.render(midi.make_notes([0.0], [1.0], [60], [80]), LOW_SR, instrument='viola')


@pytest.mark.parametrize('instrument', INSTRUMENTS)
def test_every_instrument_is_finite_bounded_silent_before_onset_and_released(instrument):
  on, off = 0.25, 0.75
  notes = midi.make_notes([on, on, on + 0.1], [off, off, off], [48, 64, 79], [127, 110, 90])
  x = synth.render(notes, LOW_SR, seed=2, instrument=instrument)
  release = synth.PRESETS[instrument].release
  assert x.dtype == np.float32 and x.shape == (int(np.ceil((off + release) * LOW_SR)), 2)
  assert np.all(np.isfinite(x)) and np.abs(x).max() <= 1 and np.abs(x).max() > 0.01
  t_on = int(on * LOW_SR)
  assert not x[:t_on].any()
  assert np.abs(x[t_on:t_on + 32]).max() > 0  # sounding from the onset sample on (2 ms)
  # Released to exactly zero: the last release-time of a longer buffer is silent.
  longer = synth.render(notes, LOW_SR, len(x) + 100, seed=2, instrument=instrument)
  np.testing.assert_array_equal(longer[:len(x)], x)
  assert not longer[int((off + release) * LOW_SR) + 1:].any()
  np.testing.assert_array_equal(x, synth.render(notes, LOW_SR, seed=2, instrument=instrument))
  assert not np.array_equal(x, synth.render(notes, LOW_SR, seed=3, instrument=instrument))


def _one(instrument, pitch=60, velocity=80, onset=0.1, offset=1.6, seconds=2.0, sr=LOW_SR):
  notes = midi.make_notes([onset], [offset], [pitch], [velocity])
  return synth.render(notes, sr, int(seconds * sr), instrument=instrument).mean(1)  # [T]


def _harmonic_profile(x, f0, sr=LOW_SR, num=12):
  """Power in bands of width f0 around the harmonics 1..num, summing to 1."""
  mag = np.abs(np.fft.rfft(x * np.hanning(len(x)), 4 * len(x)))**2
  freqs = np.fft.rfftfreq(4 * len(x), 1 / sr)
  e = np.array([mag[np.abs(freqs - k * f0) < f0 / 2].sum() for k in range(1, num + 1)])
  return e / e.sum()


def _rms(x, start, stop, sr=LOW_SR):
  return np.sqrt(np.mean(x[int(start * sr):int(stop * sr)]**2))


def test_instruments_differ_in_spectral_envelope():
  f0 = synth.hz(60)
  profiles = {i: _harmonic_profile(_one(i)[int(0.15 * LOW_SR):int(0.65 * LOW_SR)], f0)
              for i in INSTRUMENTS}
  for a in INSTRUMENTS:  # every pair at least 15% of the power apart
    for b in INSTRUMENTS[INSTRUMENTS.index(a) + 1:]:
      assert 0.5 * np.abs(profiles[a] - profiles[b]).sum() > 0.15, (a, b, profiles)
  centroid = {i: np.sum(np.arange(1, 13) * p) for i, p in profiles.items()}
  assert max(centroid, key=centroid.get) == 'harpsichord'  # plucked near the end: brightest
  assert centroid['harpsichord'] > 1.5 * centroid['piano']
  assert centroid['strings'] > 1.3 * centroid['piano']  # a sawtooth through the body
  # Organ ranks at 4' and 2' put strong even partials beside the 8' and 2 2/3'.
  assert profiles['organ'][1] > 0.2 and profiles['organ'][3] > 0.05
  # The settled marimba bar is almost a pure fundamental; struck, its first overtone is at
  # 3.9 f0, not at a harmonic.
  assert profiles['mallet'][0] > 0.95
  hit = _one('mallet', pitch=72, velocity=110)[int(0.1 * LOW_SR):int(0.2 * LOW_SR)]
  mag = np.abs(np.fft.rfft(hit * np.hanning(len(hit)), 16 * len(hit)))
  freqs = np.fft.rfftfreq(16 * len(hit), 1 / LOW_SR)
  band = (freqs > 3.6 * synth.hz(72)) & (freqs < 4.3 * synth.hz(72))
  assert abs(freqs[band][np.argmax(mag[band])] / synth.hz(72) - 3.9) < 0.03


def _half_rise_ms(x, onset=0.1, sr=LOW_SR):
  """Milliseconds from the onset until the 2 ms RMS envelope first reaches half its maximum."""
  env = np.sqrt(np.convolve(x**2, np.ones(32) / 32))[31:]  # [T] trailing window at t
  t0 = int(onset * sr)
  return (np.argmax(env[t0:] > 0.5 * env[t0:t0 + int(0.4 * sr)].max())) / sr * 1000


def test_instruments_differ_in_temporal_envelope():
  xs = {i: _one(i) for i in INSTRUMENTS}
  sustain = {i: _rms(x, 1.2, 1.4) / _rms(x, 0.15, 0.35) for i, x in xs.items()}
  assert 0.95 < sustain['organ'] < 1.05 and 0.9 < sustain['strings'] < 1.1  # held: no decay
  assert sustain['mallet'] < 0.3 and sustain['harpsichord'] < 0.5 and sustain['piano'] < 0.5
  rise = {i: _half_rise_ms(x) for i, x in xs.items()}
  assert max(rise['piano'], rise['harpsichord'], rise['mallet']) < 3, rise
  assert 10 < rise['organ'] < 40 and 35 < rise['strings'] < 100, rise
  assert rise['strings'] > 1.5 * rise['organ']
  # 20-50 ms after the key is let go the organ has stopped; the strings' bows still sound.
  after = {i: _rms(x, 1.62, 1.65) / _rms(x, 1.5, 1.6) for i, x in xs.items()}
  assert after['organ'] < 0.05 < after['strings']
  # Higher notes die away faster on the plucked and struck instruments.
  for i in ('harpsichord', 'mallet'):
    low, high = _one(i, pitch=48), _one(i, pitch=84)
    assert (_rms(high, 0.9, 1.1) / _rms(high, 0.15, 0.25)
            < 0.5 * _rms(low, 0.9, 1.1) / _rms(low, 0.15, 0.25)), i


def test_velocity_sensitivity():
  def loudness_and_colour(instrument, velocity):  # over the first 50 ms
    x = _one(instrument, velocity=velocity)[int(0.1 * LOW_SR):int(0.15 * LOW_SR)]
    p = _harmonic_profile(x, synth.hz(60))
    return np.sqrt(np.mean(x**2)), np.sum(np.arange(1, 13) * p)
  (soft, c_soft), (loud, c_loud) = (loudness_and_colour('harpsichord', v) for v in (30, 127))
  assert 0.5 < soft / loud < 0.9 and abs(c_soft / c_loud - 1) < 1e-3  # nearly insensitive
  (soft, _), (loud, _) = (loudness_and_colour('piano', v) for v in (30, 127))
  assert soft / loud < 0.1
  for i in ('strings', 'mallet'):  # harder bowing and mallets: brighter as well as louder
    (soft, c_soft), (loud, c_loud) = (loudness_and_colour(i, v) for v in (30, 127))
    assert soft / loud < 0.3 and c_loud > 1.05 * c_soft, i


def _fundamental_cents(instrument):
  """The instantaneous frequency of C4's fundamental from 0.5 to 2 s, in cents from f0."""
  f0 = synth.hz(60)
  sos = signal.butter(4, [0.8 * f0, 1.2 * f0], 'bandpass', fs=LOW_SR, output='sos')
  x = signal.sosfiltfilt(sos, _one(instrument, velocity=90, onset=0.0, offset=2.5, seconds=2.5))
  hz = np.diff(np.unwrap(np.angle(signal.hilbert(x)))) * LOW_SR / (2 * np.pi)  # [T - 1]
  return 1200 * np.log2(hz[int(0.5 * LOW_SR):int(2.0 * LOW_SR)] / f0)


def test_strings_vibrato():
  cents = _fundamental_cents('strings')
  assert 3 < cents.std() < 6 and abs(cents.mean()) < 0.5, cents.std()  # +-6 cents: std 4.2
  spectrum = np.abs(np.fft.rfft(cents - cents.mean(), 8 * len(cents)))
  freqs = np.fft.rfftfreq(8 * len(cents), 1 / LOW_SR)
  assert abs(freqs[np.argmax(spectrum)] - synth.VIBRATO_RATE) < 0.3
  assert _fundamental_cents('organ').std() < 0.2


def test_every_instrument_starts_each_note_at_its_onset_sample():
  """Isolated notes: the first sample above 1% of a note's peak lies within one 512-sample hop
  after its onset, and nothing sounds before it, in every instrument."""
  pitches = [36, 48, 55, 60, 67, 72, 79, 84, 91]
  onsets = 0.2 + 0.65 * np.arange(len(pitches)) + 0.0131 * np.arange(len(pitches))
  notes = midi.make_notes(onsets, onsets + 0.3, pitches, [40, 110, 70, 90, 55, 100, 30, 80, 120])
  starts = np.round(onsets * LOW_SR).astype(int)
  for instrument in INSTRUMENTS:
    x = np.abs(synth.render(notes, LOW_SR, instrument=instrument)).max(1)  # [T]
    assert not x[:starts[0]].any()
    for s, nxt in zip(starts, np.append(starts[1:], len(x))):
      assert not x[s - int(0.1 * LOW_SR):s].any(), (instrument, s)  # the last one has ended
      first = s + np.argmax(x[s:nxt] > 0.01 * x[s:nxt].max())
      assert s <= first < s + 512, (instrument, s, first)
