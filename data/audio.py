"""Audio I/O, resampling and sample quantisation.

Conventions:

* Float audio is float32 in [-1, 1], shaped [N] (mono) or [N, C] (channels last), as soundfile
  returns it: 16-bit PCM sample s reads as s / 32768.
* Mono mix-down is the mean of the channels.
* Resampling is soxr's band-limited 'HQ' resampler (anti-aliased; its stop band is far below
  16-bit noise, see tests/data/test_audio.py for the measured level).
* mu-law with `bits` bits has mu = 2**bits - 1 and 2**bits classes. Companding maps x in [-1, 1]
  to y = sign(x) ln(1 + mu |x|) / ln(1 + mu) in [-1, 1]; the code of x is
  round((y + 1) / 2 * mu), an integer in [0, mu] (8 bits: 0..255; zero lies halfway between
  codes 127 and 128 and encodes as 128); decoding takes the code to its level y = 2 code / mu - 1
  and expands it. The round trip errs by at most ln(1 + mu) (1 + mu |x|) (1 + mu)**(1 / mu) / mu**2
  (half a code step, 1 / mu, times the expansion's steepest slope within that half step).
* Linear quantisation with `bits` bits maps x in [-1, 1] to round((x + 1) / 2 * (2**bits - 1)).
"""

import os
import struct

import numpy as np
import soundfile as sf
import soxr


# What a dataset accepts: lossless containers and sample encodings (soundfile's names).
LOSSLESS_FORMATS = ('WAV', 'WAVEX', 'RF64', 'W64', 'FLAC')
LOSSLESS_SUBTYPES = ('PCM_S8', 'PCM_U8', 'PCM_16', 'PCM_24', 'PCM_32', 'FLOAT', 'DOUBLE')


class AudioError(ValueError):
  """An audio file that cannot be used; the message names the file and the fault."""


def _riff_data_shortfall(path: str) -> tuple[int, int] | None:
  """(declared, present) bytes of a WAV's data chunk when the file is cut short, else None.

  libsndfile silently decodes the frames that are present in a truncated WAV, so a cut-off
  download would pass for a short piece; the RIFF chunk sizes tell.
  """
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    head = f.read(12)
    if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE':
      return None
    pos = 12
    while pos + 8 <= size:
      f.seek(pos)
      chunk_id, chunk_size = struct.unpack('<4sI', f.read(8))
      if chunk_id == b'data':
        present = size - pos - 8
        return (chunk_size, present) if present < chunk_size else None
      pos += 8 + chunk_size + (chunk_size & 1)
  return None


def audio_info(path: str | os.PathLike) -> sf._SoundFileInfo:
  """Header information of an audio file.

  Raises:
    AudioError: the file is missing, empty, undecodable, truncated, or not PCM/float audio in a
      WAV or FLAC container (an MP3 or u-law stream behind a .wav name, say).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(f'{path}: audio file is missing')
  if os.path.getsize(path) == 0:
    raise AudioError(f'{path}: audio file is empty')
  try:
    info = sf.info(path)
  except (sf.LibsndfileError, RuntimeError) as e:
    raise AudioError(f'{path}: audio does not decode ({e})') from None
  if info.format not in LOSSLESS_FORMATS or info.subtype not in LOSSLESS_SUBTYPES:
    raise AudioError(f'{path}: audio is {info.format} {info.subtype}, not PCM or float in a '
                     f'WAV/FLAC container (lossy or unsupported encoding)')
  shortfall = _riff_data_shortfall(path)
  if shortfall:
    raise AudioError(f'{path}: WAV is truncated: its header declares {shortfall[0]} data bytes, '
                     f'the file holds {shortfall[1]}')
  return info


def read_audio(path: str | os.PathLike, mono: bool = True) -> tuple[np.ndarray, int]:
  """Reads a WAV or FLAC file (PCM or float samples) as float32.

  Args:
    path: the audio file.
    mono: mix the channels down to one.

  Returns:
    (audio, sample_rate): audio [N] if mono else [N, C], float32 in [-1, 1].

  Raises:
    AudioError: missing, empty, truncated, undecodable or lossy file (`audio_info`), or float
      samples that are NaN, infinite or beyond full scale (|x| > 1; never clipped silently).
  """
  info = audio_info(path)
  try:
    x, sr = sf.read(os.fspath(path), dtype='float32', always_2d=True)  # [N, C]
  except (sf.LibsndfileError, RuntimeError) as e:
    raise AudioError(f'{os.fspath(path)}: audio does not decode ({e})') from None
  if len(x) != info.frames:
    raise AudioError(f'{os.fspath(path)}: decoded {len(x)} frames, the header declares '
                     f'{info.frames}')
  if info.subtype in ('FLOAT', 'DOUBLE'):
    bad = ~np.isfinite(x).all(axis=1)  # [N] frames with a NaN or infinite sample
    if bad.any():
      raise AudioError(f'{os.fspath(path)}: float audio holds NaN or infinite samples in '
                       f'{int(bad.sum())} frame(s), the first at frame {int(np.argmax(bad))}')
    peak = float(np.max(np.abs(x), initial=0.0))
    if peak > 1.0:
      raise AudioError(f'{os.fspath(path)}: float audio peaks at {peak:.4g}, beyond full scale; '
                       'expected samples in [-1, 1]')
  return (to_mono(x) if mono else x), sr


def to_mono(x: np.ndarray) -> np.ndarray:
  """[N, C] -> [N], the mean of the channels; [N] is returned unchanged."""
  return x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Band-limited resampling of [N] or [N, C] float audio along the first axis."""
  if rate_in == rate_out:
    return x
  return soxr.resample(x, rate_in, rate_out, quality='HQ').astype(np.float32, copy=False)


def to_int16(x: np.ndarray) -> np.ndarray:
  """Float audio -> int16 PCM (x * 32768, rounded and clipped); soundfile's convention."""
  return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def from_int16(x: np.ndarray) -> np.ndarray:
  """int16 PCM -> float32 in [-1, 1)."""
  return x.astype(np.float32) / 32768.0


def _mu(bits: int) -> float:
  if not 1 <= bits <= 24:
    raise ValueError(f'bits={bits}: expected an integer in 1..24')
  return float(2**bits - 1)


def mu_law_compress(x: np.ndarray, bits: int = 8) -> np.ndarray:
  """Continuous mu-law companding of x in [-1, 1] (clipped) to [-1, 1]."""
  mu = _mu(bits)
  x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
  return np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def mu_law_expand(y: np.ndarray, bits: int = 8) -> np.ndarray:
  """Inverse of `mu_law_compress`."""
  mu = _mu(bits)
  y = np.asarray(y, np.float64)
  return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


def mu_law_encode(x: np.ndarray, bits: int = 8) -> np.ndarray:
  """Float audio -> int32 mu-law codes in [0, 2**bits - 1] (module docstring)."""
  mu = _mu(bits)
  return np.round((mu_law_compress(x, bits) + 1.0) * 0.5 * mu).astype(np.int32)


def mu_law_decode(codes: np.ndarray, bits: int = 8) -> np.ndarray:
  """mu-law codes -> float32 audio at the codes' levels."""
  mu = _mu(bits)
  y = 2.0 * np.asarray(codes, np.float64) / mu - 1.0
  return mu_law_expand(y, bits).astype(np.float32)


def linear_encode(x: np.ndarray, bits: int = 8) -> np.ndarray:
  """Float audio in [-1, 1] (clipped) -> int32 codes in [0, 2**bits - 1], uniform levels."""
  levels = _mu(bits)
  x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
  return np.round((x + 1.0) * 0.5 * levels).astype(np.int32)


def linear_decode(codes: np.ndarray, bits: int = 8) -> np.ndarray:
  """Inverse of `linear_encode` up to its quantisation step 2 / (2**bits - 1)."""
  return (2.0 * np.asarray(codes, np.float64) / _mu(bits) - 1.0).astype(np.float32)


def encode(wave: np.ndarray, encoding: str, bits: int) -> np.ndarray:
  """Float audio in [-1, 1] -> what batches carry: int32 codes ('mu_law', 'linear'), or the
  floats ('float')."""
  if encoding == 'mu_law':
    return mu_law_encode(wave, bits)
  if encoding == 'linear':
    return linear_encode(wave, bits)
  if encoding == 'float':
    return np.asarray(wave, np.float32)
  raise ValueError(f"encoding {encoding!r}: expected 'mu_law', 'linear' or 'float'")


def decode(audio: np.ndarray, encoding: str, bits: int) -> np.ndarray:
  """The inverse of `encode`: batch audio -> float audio in [-1, 1]."""
  if encoding == 'mu_law':
    return mu_law_decode(np.asarray(audio), bits)
  if encoding == 'linear':
    return linear_decode(np.asarray(audio), bits)
  if encoding == 'float':
    return np.asarray(audio, np.float32)
  raise ValueError(f"encoding {encoding!r}: expected 'mu_law', 'linear' or 'float'")
