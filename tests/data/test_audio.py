"""Audio I/O, resampling and quantisation conventions of data/audio.py."""

import numpy as np
import pytest
import soundfile as sf

from data import audio


def _standard_mu_law(x, mu):
  # The ITU-T G.711 / WaveNet companding law, written out independently of data/audio.py.
  return np.array([np.copysign(np.log(1.0 + mu * abs(v)) / np.log(1.0 + mu), v) for v in x])


@pytest.mark.parametrize('bits', [8, 16])
def test_mu_law_compress_matches_standard_formula(bits):
  x = np.random.default_rng(0).uniform(-1, 1, 2000)
  y = audio.mu_law_compress(x, bits)
  np.testing.assert_allclose(y, _standard_mu_law(x, 2.0**bits - 1), rtol=0, atol=1e-6)
  np.testing.assert_allclose(audio.mu_law_expand(y, bits), x, rtol=0, atol=1e-6)
  # A known value: mu = 255 maps 0.5 to ln(128.5) / ln(256).
  if bits == 8:
    assert audio.mu_law_compress(np.array([0.5]), 8)[0] == pytest.approx(0.8757031, abs=1e-6)


@pytest.mark.parametrize('bits, classes, silence', [(8, 256, 128), (16, 65536, 32768)])
def test_mu_law_code_conventions(bits, classes, silence):
  # 2**bits levels are symmetric about zero, which falls halfway between the two middle codes:
  # exact zero rounds (half to even) to the upper one.
  codes = audio.mu_law_encode(np.array([-1.0, -1e-9, 0.0, 1e-9, 1.0, -3.0, 3.0]), bits)
  assert codes.dtype == np.int32
  assert codes.tolist() == [0, silence - 1, silence, silence, classes - 1, 0, classes - 1]
  every = np.arange(classes)
  # Every code decodes to a level that encodes back to itself, and the levels are increasing.
  levels = audio.mu_law_decode(every, bits)
  np.testing.assert_array_equal(audio.mu_law_encode(levels, bits), every)
  assert np.all(np.diff(levels) > 0)


@pytest.mark.parametrize('bits', [8, 16])
def test_mu_law_round_trip_error_bound(bits):
  mu = 2.0**bits - 1
  rng = np.random.default_rng(1)
  x = np.concatenate([rng.uniform(-1, 1, 20000), rng.uniform(-1e-3, 1e-3, 20000)])
  err = np.abs(audio.mu_law_decode(audio.mu_law_encode(x, bits), bits) - x)
  bound = np.log1p(mu) * (1 + mu * np.abs(x)) * (1 + mu)**(1 / mu) / mu**2
  assert np.all(err <= bound + 1e-7)  # float32 decode adds ~6e-8
  # The bound is tight: the worst case uses more than half of it.
  assert np.max(err / bound) > 0.5


@pytest.mark.parametrize('bits', [8, 12])
def test_linear_round_trip(bits):
  x = np.random.default_rng(2).uniform(-1, 1, 5000)
  codes = audio.linear_encode(x, bits)
  assert codes.min() >= 0 and codes.max() <= 2**bits - 1
  assert np.max(np.abs(audio.linear_decode(codes, bits) - x)) <= 1.0 / (2**bits - 1) + 1e-7


def test_int16_scale_matches_soundfile(tmp_path):
  raw = np.arange(-32768, 32768, dtype=np.int16)
  sf.write(tmp_path / 'a.wav', raw, 16000, subtype='PCM_16')
  as_float, _ = sf.read(tmp_path / 'a.wav', dtype='float32')
  np.testing.assert_array_equal(audio.from_int16(raw), as_float)
  np.testing.assert_array_equal(audio.to_int16(as_float), raw)
  assert audio.to_int16(np.array([1.5, -1.5])).tolist() == [32767, -32768]


def _tone(freq, rate, seconds=1.0, amp=0.5):
  t = np.arange(int(rate * seconds)) / rate
  return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _db(x):
  return 20 * np.log10(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-30)


@pytest.mark.parametrize('rate_in, rate_out', [(44100, 16000), (48000, 24000), (48000, 16000)])
def test_resample_preserves_frequency_and_level(rate_in, rate_out):
  y = audio.resample(_tone(1000.0, rate_in), rate_in, rate_out)
  assert abs(len(y) - rate_out) <= 1
  core = y[rate_out // 10:-rate_out // 10]  # away from the filter's edge transients
  spectrum = np.abs(np.fft.rfft(core * np.hanning(len(core))))
  peak_hz = np.argmax(spectrum) * rate_out / len(core)
  assert abs(peak_hz - 1000.0) < 2 * rate_out / len(core)
  assert _db(core) == pytest.approx(_db(_tone(1000.0, rate_in)), abs=0.05)


@pytest.mark.parametrize('rate_in, rate_out, freq', [(44100, 16000, 10000.0),
                                                     (48000, 16000, 12000.0),
                                                     (48000, 24000, 15000.0)])
def test_resample_rejects_content_above_new_nyquist(rate_in, rate_out, freq):
  # A tone above the new Nyquist would alias to |rate_out - freq|; soxr's HQ filter must remove
  # it to below -100 dB relative to the input (measured: under -120 dB).
  x = _tone(freq, rate_in)
  y = audio.resample(x, rate_in, rate_out)[rate_out // 10:-rate_out // 10]
  assert _db(y) - _db(x) < -100


def test_read_audio_formats_and_mixdown(tmp_path):
  stereo = np.stack([_tone(440, 16000, 0.1), -_tone(440, 16000, 0.1) * 0.5], axis=1)
  for name, subtype in [('a16.wav', 'PCM_16'), ('a24.wav', 'PCM_24'), ('af.wav', 'FLOAT'),
                        ('a.flac', 'PCM_16')]:
    sf.write(tmp_path / name, stereo, 16000, subtype=subtype)
    mono, rate = audio.read_audio(tmp_path / name)
    assert rate == 16000 and mono.dtype == np.float32 and mono.shape == (1600,)
    np.testing.assert_allclose(mono, stereo.mean(axis=1), atol=1.0 / 32768)
    both, _ = audio.read_audio(tmp_path / name, mono=False)
    assert both.shape == (1600, 2)


def _assert_one_line_error(path, match):
  with pytest.raises(audio.AudioError, match=match) as e:
    audio.read_audio(path)
  assert str(path) in str(e.value) and '\n' not in str(e.value)


def test_read_audio_bad_files(tmp_path):
  good = tmp_path / 'good.wav'
  sf.write(good, np.zeros((44100, 2), np.float32), 44100, subtype='PCM_16')
  data = good.read_bytes()
  (tmp_path / 'empty.wav').write_bytes(b'')
  (tmp_path / 'trunc.wav').write_bytes(data[:len(data) // 2])
  (tmp_path / 'corrupt.wav').write_bytes(b'RIFF\x00\x00\x00\x00WAVEjunk' + data[20:200])
  _assert_one_line_error(tmp_path / 'missing.wav', 'missing')
  _assert_one_line_error(tmp_path / 'empty.wav', 'empty')
  _assert_one_line_error(tmp_path / 'trunc.wav', 'truncated')
  _assert_one_line_error(tmp_path / 'corrupt.wav', 'does not decode')
