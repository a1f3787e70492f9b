"""data/spectral.py against librosa 0.11: STFT, mel, CQT, Griffin-Lim, IF, losses, jit."""

import functools
import glob

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from data import audio
from data import corpus
from data import spectral

SR = 16000
WINDOWS = ['hann', 'hamming', 'blackman', ('kaiser', 8.0)]


def _noise(n, seed=0, amp=0.3):
  return (amp * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _harmonic(n, f0=220.0, partials=5):
  """A steady tone: `partials` harmonics of f0 at amplitudes 0.4 / k, phases k."""
  t = np.arange(n) / SR
  return sum(0.4 / k * np.sin(2 * np.pi * f0 * k * t + k)
             for k in range(1, partials + 1)).astype(np.float32)


def _rel(ours, ref):
  """max |ours - ref| / max |ref|."""
  return float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))


def _sc(target, y, n_fft, hop):
  """Spectral convergence ||S - |STFT(y)|||_F / ||S||_F, per leading index of y."""
  m = np.abs(librosa.stft(np.asarray(y), n_fft=n_fft, hop_length=hop))
  return np.linalg.norm(target - m, axis=(-2, -1)) / np.linalg.norm(target)


@pytest.fixture(scope='module')
def piano(tmp_path_factory):
  """The first 2 s of a one-piece embedded corpus written at 16 kHz, read back as mono."""
  out = tmp_path_factory.mktemp('spectral') / 'corpus'
  corpus.write_corpus(out, num_pieces=1, max_seconds=2.0, sample_rate=SR,
                      source='procedural', num_workers=1)
  (path,) = glob.glob(str(out / '*' / '*.wav'))
  x, rate = audio.read_audio(path)
  assert rate == SR and x.shape[0] >= 2 * SR
  return x[:2 * SR]


# ---------------------------------------------------------------------------------------------
# STFT


@pytest.mark.parametrize('window', WINDOWS, ids=str)
def test_stft_matches_librosa(window, piano):
  x = np.stack([_noise(SR), piano[:SR]])
  # 400 / 150 / 300: a hop that does not divide n_fft and a window shorter than n_fft.
  for n_fft, hop, win in [(512, 128, None), (400, 150, 300)]:
    for center in (True, False):
      for pad_mode in ('constant', 'reflect'):
        ours = spectral.stft(x, n_fft, hop, win, window, center, pad_mode)
        ref = librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window=window,
                           center=center, pad_mode=pad_mode)
        assert ours.shape == ref.shape
        for i in range(2):
          assert _rel(ours[i], ref[i]) <= 1e-5, (n_fft, hop, win, center, pad_mode, i)


def _istft(*args):
  return jax.jit(spectral.istft, static_argnums=range(1, 7))(*args)


@pytest.mark.parametrize('window, n_fft, hop, win', [
    ('hann', 512, 128, None), ('hann', 512, 256, None), ('hamming', 400, 100, None),
    (('kaiser', 8.0), 512, 64, None), ('blackman', 512, 100, 400)],
    ids=str)
def test_istft_inverts_stft(window, n_fft, hop, win):
  x = _noise(SR // 2, seed=1)
  y = _istft(spectral.stft(x, n_fft, hop, win, window), hop, win, n_fft, window, True, len(x))
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(y - x))) <= 1e-5  # measured <= 2.4e-7


@pytest.mark.parametrize('n_fft, hop, win', [(512, 128, None), (400, 150, 300)], ids=str)
def test_istft_matches_librosa(n_fft, hop, win):
  x = _noise(SR // 2, seed=1)
  for center in (True, False):
    s = np.asarray(spectral.stft(x, n_fft, hop, win, 'hann', center))
    for length in (None, len(x) - 300, len(x) + 700):  # as computed, trimmed, zero-padded
      ours = _istft(s, hop, win, n_fft, 'hann', center, length)
      ref = librosa.istft(s, hop_length=hop, win_length=win, n_fft=n_fft, center=center,
                          length=length)
      assert ours.shape == ref.shape, (center, length)
      assert float(np.max(np.abs(np.asarray(ours) - ref))) <= 1e-5, (center, length)


# ---------------------------------------------------------------------------------------------
# Mel


@pytest.mark.parametrize('sr, n_fft, n_mels, fmin, fmax', [
    (16000, 2048, 229, 30.0, None), (22050, 1024, 128, 0.0, None),
    (16000, 512, 80, 50.0, 7600.0), (44100, 4096, 64, 20.0, 16000.0)])
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax):
  for htk in (False, True):
    for norm in ('slaney', None, 2.0):
      ours = spectral.mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm)
      ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                htk=htk, norm=norm)
      assert ours.shape == ref.shape == (n_mels, 1 + n_fft // 2) and ours.dtype == np.float32
      np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6, err_msg=f'{htk} {norm}')
      assert np.all(ours.max(axis=1) > 0)  # no empty filter


def test_mel_spectrogram_matches_librosa(piano):
  x = np.stack([_noise(SR, seed=2), piano[:SR]])
  for kw in [dict(n_fft=1024, hop_length=256, n_mels=80),
             dict(n_fft=2048, hop_length=512, n_mels=229, fmin=30.0, htk=True, norm=None),
             dict(n_fft=400, hop_length=160, win_length=320, n_mels=64, window='hamming',
                  center=False)]:
    mel = jax.jit(lambda x, kw=kw: [spectral.mel_spectrogram(x, sr=SR, power=p, **kw)
                                    for p in (1.0, 2.0)])
    for power, ours in zip((1.0, 2.0), mel(x)):
      ref = librosa.feature.melspectrogram(y=x, sr=SR, power=power, **kw)
      assert ours.shape == ref.shape
      for i in range(2):
        assert _rel(ours[i], ref[i]) <= 1e-5, (kw, power, i)  # measured <= 2e-7


def test_power_to_db_and_log_mel(piano):
  x = np.stack([_noise(SR, seed=2), piano[:SR]])
  kw = dict(sr=SR, n_fft=1024, hop_length=256, n_mels=80)
  s = np.asarray(spectral.mel_spectrogram(x, **kw))
  for ref in (1.0, np.max):
    for top_db in (80.0, None):
      np.testing.assert_allclose(spectral.power_to_db(s, ref=ref, top_db=top_db),
                                 librosa.power_to_db(s, ref=ref, top_db=top_db), atol=1e-4)
  log_mel = spectral.log_mel_spectrogram(x, **kw)
  np.testing.assert_allclose(log_mel, np.log(np.maximum(s, 1e-5)), rtol=1e-5, atol=1e-5)
  assert float(log_mel.min()) == pytest.approx(np.log(1e-5))  # the floor is reached


@pytest.mark.parametrize('power', [1.0, 2.0])
def test_mel_to_stft_reproduces_the_mel(power, piano):
  # Measured relative errors (Frobenius) of fb @ S^power against the input mel: 5.2e-3 / 2.0e-3
  # (tone / piano) at power 2, 0.7e-3 / 1.0e-3 at power 1; librosa.feature.inverse.mel_to_stft's
  # own are 4.9e-3 / 1.0e-2 and 4.8e-2 / 1.2e-2.
  x = np.stack([_harmonic(SR), piano[:SR]])
  kw = dict(sr=SR, n_fft=1024, power=power)
  mel = spectral.mel_spectrogram(x, hop_length=256, n_mels=128, **kw)
  s = spectral.mel_to_stft(mel, **kw)
  assert s.shape == (2, 513, mel.shape[-1]) and float(s.min()) >= 0
  fb = spectral.mel_filterbank(SR, 1024, 128)
  back = jnp.einsum('mk,bkf->bmf', fb, s ** power)
  err = jnp.linalg.norm(back - mel, axis=(-2, -1)) / jnp.linalg.norm(mel, axis=(-2, -1))
  assert float(err.max()) <= 1e-2


# ---------------------------------------------------------------------------------------------
# CQT


NOTES = np.array([30, 45, 69, 100])  # MIDI; CQT bin 0 is C1 = MIDI 24


@pytest.fixture(scope='module')
def cqt_signals(piano):
  """{name: 2 s signal} and their CQTs (hop 512, one jitted call on the batch of all)."""
  t = np.arange(2 * SR) / SR
  signals = {'noise': _noise(2 * SR, seed=4), 'tones': _harmonic(2 * SR, f0=97.3, partials=3),
             'piano': piano,
             **{f'note{m}': (0.5 * np.sin(2 * np.pi * librosa.midi_to_hz(m) * t)).astype(
                 np.float32) for m in NOTES}}
  c = jax.jit(lambda x: spectral.cqt(x, sr=SR, hop_length=512))(np.stack(list(signals.values())))
  return signals, dict(zip(signals, np.asarray(c)))


# Bounds on |ours - librosa.cqt| / max |librosa.cqt| at 16 kHz, hop 512, 84 bins from C1, on
# 2 s (63 frames; interior: away from the first and last 20). The algorithms are the same but
# for the decimator between octaves (an ideal FFT low-pass here, soxr_hq in librosa), which
# differ at the signal's ends. Measured: interior 9.4e-5 (noise), 7.5e-7 (tones), 8.7e-6
# (piano); all frames 1.1e-2, 9.3e-4, 8.7e-3, the worst at the first and last frames.
CQT_BOUNDS = {'noise': (1e-3, 2e-2), 'tones': (1e-4, 1e-2), 'piano': (1e-4, 2e-2)}


def test_cqt_matches_librosa(cqt_signals):
  signals, ours = cqt_signals
  for name, (interior, everywhere) in CQT_BOUNDS.items():
    ref = librosa.cqt(signals[name], sr=SR, hop_length=512)
    assert ours[name].shape == ref.shape == (84, 63)
    err = np.abs(ours[name] - ref) / np.abs(ref).max()
    assert err[:, 20:-20].max() <= interior, name
    assert err.max() <= everywhere, name


@pytest.mark.parametrize('sr, hop', [(44100, 512), (24000, 300)])
def test_cqt_decimation_plans_match_librosa(sr, hop):
  """44.1 kHz decimates once before the top octave; a hop of 300 (two factors of 2) stops
  decimating after two octaves, the lower ones computed at a quarter of the rate."""
  x = _noise(sr, seed=9)
  ours = np.asarray(spectral.cqt(x, sr=sr, hop_length=hop))
  ref = librosa.cqt(x, sr=sr, hop_length=hop)
  assert ours.shape == ref.shape
  err = np.abs(ours - ref) / np.abs(ref).max()
  assert err[:, 20:-20].max() <= 1e-3 and err.max() <= 2e-2  # measured 7.4e-5, 6.9e-3


def test_cqt_peaks_on_the_note_bin(cqt_signals):
  _, ours = cqt_signals
  profile = np.stack([np.abs(ours[f'note{m}'][:, 8:-8]).mean(-1) for m in NOTES])
  np.testing.assert_array_equal(profile.argmax(-1), NOTES - 24)
  peak = profile[np.arange(len(NOTES)), NOTES - 24]
  assert np.all(peak > 2 * profile[np.arange(len(NOTES)), NOTES - 24 - 2])  # a tone below


def test_cqt_rejects_bins_past_nyquist():
  with pytest.raises(ValueError, match='Nyquist'):
    spectral.cqt(_noise(SR), sr=SR, n_bins=96)


# ---------------------------------------------------------------------------------------------
# Griffin-Lim


def test_griffin_lim_converges_like_librosa(piano):
  # Spectral convergence after 32 iterations, mean over 4 random starts each (measured, 1 s of
  # piano at 512 / 128): ours 0.169 vs librosa 0.170 at momentum 0, 0.098 vs 0.103 at 0.99;
  # from a random phase (no iterations) both 0.63.
  x, n_fft, hop = piano[:SR], 512, 128
  s = np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop))
  momenta = (0.0, 0.99)
  gl = jax.jit(lambda s: [spectral.griffin_lim(s, 32, hop, momentum=m, length=SR)
                          for m in momenta])
  start = _sc(s, librosa.griffinlim(s, n_iter=0, hop_length=hop, random_state=0, length=SR),
              n_fft, hop)
  for momentum, y in zip(momenta, gl(np.broadcast_to(s, (4,) + s.shape))):
    ours = _sc(s, y, n_fft, hop)  # 4 different random starts
    assert np.ptp(ours) > 0
    ref = [_sc(s, librosa.griffinlim(s, n_iter=32, hop_length=hop, momentum=momentum,
                                      random_state=seed, length=SR), n_fft, hop)
           for seed in range(4)]
    assert ours.mean() <= 1.1 * np.mean(ref), momentum
    assert ours.mean() <= 0.4 * start, momentum


def test_griffin_lim_is_seeded():
  # (init=None is deterministic: test_jit_and_leading_axes_give_per_example_results.)
  s = np.abs(librosa.stft(_harmonic(SR // 4), n_fft=256, hop_length=64))
  gl = jax.jit(lambda s, key: spectral.griffin_lim(s, 4, 64, random_state=key))
  a, b, c = (gl(s, jax.random.key(k)) for k in (0, 0, 1))
  np.testing.assert_array_equal(a, b)
  assert float(jnp.max(jnp.abs(a - c))) > 1e-2


def test_griffin_lim_takes_a_traced_int_seed():
  s = np.ones((129, 8), np.float32)
  gl = jax.jit(lambda s, seed: spectral.griffin_lim(s, 1, 64, random_state=seed))
  np.testing.assert_array_equal(gl(s, 0), gl(s, 0))
  assert not np.array_equal(gl(s, 0), gl(s, 1))


# ---------------------------------------------------------------------------------------------
# Phase: instantaneous frequency


def test_instantaneous_frequency_range_and_inverse():
  x = np.stack([_harmonic(SR), _noise(SR, seed=5)])
  s = spectral.stft(x, 1024, 256)
  if_ = jax.jit(spectral.instantaneous_frequency)(jnp.angle(s))
  assert if_.shape == s.shape
  assert float(jnp.max(jnp.abs(if_))) <= 1 and float(jnp.max(jnp.abs(if_))) > 0.99
  phase = jax.jit(spectral.phase_from_instantaneous_frequency)(if_)
  unwrapped = np.unwrap(np.angle(np.asarray(s, np.complex128)), axis=-1)
  assert float(np.max(np.abs(np.asarray(phase) - unwrapped))) <= 1e-3  # measured 3e-5 rad
  # A tone at 1015.625 Hz, the centre of bin 65, advances 16.25 turns per 256-sample hop: a
  # principal phase step of pi / 2, an IF of 0.5.
  tone = np.sin(2 * np.pi * 1015.625 * np.arange(SR) / SR).astype(np.float32)
  tone_if = jax.jit(spectral.instantaneous_frequency)(jnp.angle(spectral.stft(
      np.stack([tone, tone]), 1024, 256)))  # the shape above: no new compilation
  np.testing.assert_allclose(tone_if[0, 65, 4:-4], 0.5, atol=1e-3)


def test_magnitude_and_if_round_trip():
  # Measured max error 4.6e-6 (9.1e-6 at 512 / 128), the tones peaking at 0.63.
  x = np.stack([_harmonic(SR), np.roll(_harmonic(SR, f0=330.0, partials=3), 100)])
  log_mag, if_ = jax.jit(spectral.magnitude_and_if, static_argnums=(1, 2))(x, 1024, 256)
  assert log_mag.shape == if_.shape == (2, 513, 1 + SR // 256)
  y = jax.jit(functools.partial(spectral.audio_from_magnitude_and_if, hop_length=256,
                                n_fft=1024, length=SR))(log_mag, if_)
  assert float(jnp.max(jnp.abs(y - x))) <= 5e-5


# ---------------------------------------------------------------------------------------------
# Losses and their gradients


def _loss_pairs():
  """(y_hat, y) rows: different noises, silence vs noise, half-silent vs noise, identical,
  silence vs silence."""
  a, b = _noise(SR // 2, seed=6), _noise(SR // 2, seed=7)
  zero = np.zeros_like(a)
  half = np.concatenate([a[:SR // 4], zero[SR // 4:]])
  return np.stack([a, zero, half, b, zero]), np.stack([b, b, b, b, zero])


ROWS = dict(different=0, silence=1, partly_silent=2, identical=3, both_silent=4)


def _log_mel_l1(y_hat, y):
  kw = dict(sr=SR, n_fft=1024, hop_length=256, n_mels=80)
  return jnp.mean(jnp.abs(spectral.log_mel_spectrogram(y_hat, **kw) -
                          spectral.log_mel_spectrogram(y, **kw)))


LOSSES = {
    'mr_stft_loss': spectral.multi_resolution_stft_loss,
    'log_mel_l1_power2': _log_mel_l1,
    **{k: functools.partial(lambda y_hat, y, k: spectral.spectral_distances(y_hat, y, SR)[k],
                            k=k) for k in ('log_mel_l1', 'mr_stft', 'magnitude_snr')},
}


@functools.lru_cache(maxsize=None)
def _values_and_grads():
  """{name: (value, gradient w.r.t. y_hat) per row of `_loss_pairs`} for every loss, jitted
  as one program (one compilation)."""
  fn = jax.jit(lambda y_hat, y: {k: jax.vmap(jax.value_and_grad(f))(y_hat, y)
                                 for k, f in LOSSES.items()})
  return jax.tree.map(np.asarray, fn(*_loss_pairs()))


def test_losses_zero_for_identical_inputs_positive_otherwise():
  for name in ('mr_stft_loss', 'log_mel_l1_power2', 'log_mel_l1', 'mr_stft'):
    v, _ = _values_and_grads()[name]
    assert v[ROWS['identical']] == 0 and v[ROWS['both_silent']] == 0, name
    assert np.all(v[:3] > 0.1), name
  snr, _ = _values_and_grads()['magnitude_snr']
  assert snr[ROWS['identical']] > 100 and np.all(np.abs(snr[:3]) < 20)
  assert snr[ROWS['silence']] == pytest.approx(0, abs=1e-5)  # |Y - 0| = |Y|


@pytest.mark.parametrize('name', list(LOSSES))
def test_loss_gradients_finite_with_silence(name):
  _, g = _values_and_grads()[name]
  for row in ('different', 'silence', 'partly_silent'):
    assert np.all(np.isfinite(g[ROWS[row]])), row
  assert np.abs(g[ROWS['different']]).max() > 0


@pytest.mark.parametrize('name', list(LOSSES))
def test_loss_gradients_finite_at_identical_inputs(name):
  _, g = _values_and_grads()[name]
  for row in ('identical', 'both_silent'):
    assert np.all(np.isfinite(g[ROWS[row]])), row


# ---------------------------------------------------------------------------------------------
# jit and leading axes


def _all_transforms(x):
  """The transforms of x [..., 4000] at small sizes, as a dict (one jitted program)."""
  kw = dict(sr=SR, n_fft=256, hop_length=64, n_mels=32)
  mel = spectral.mel_spectrogram(x, **kw)
  s = spectral.stft(x, 256, 64)
  return {
      'stft': s, 'mel': mel,
      'istft': spectral.istft(spectral.stft(x, 256, 100), 100, length=4000),
      'mel_to_stft': spectral.mel_to_stft(mel, sr=SR, n_fft=256, n_iter=10),
      'cqt': spectral.cqt(x, sr=SR, hop_length=256, n_bins=48, fmin=130.8),
      'griffin_lim': spectral.griffin_lim(jnp.abs(s), 3, 64, init=None, length=4000),
  }


def test_jit_and_leading_axes_give_per_example_results():
  x = _noise(2 * 3 * 4000, seed=8).reshape(2, 3, 4000)
  f = jax.jit(_all_transforms)
  batched = f(x)
  for i, j in [(0, 0), (1, 2)]:
    single = f(x[i, j])
    for name in batched:
      for b, s in zip(jax.tree.leaves(batched[name]), jax.tree.leaves(single[name])):
        assert b.shape == (2, 3) + s.shape, name
        np.testing.assert_allclose(b[i, j], s, rtol=1e-4, atol=1e-5 * float(jnp.abs(s).max()),
                                   err_msg=name)
