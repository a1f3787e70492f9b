"""A small additive piano synthesiser: `Notes` in, stereo float32 audio out.

It voices the embedded corpus (data/corpus.py) and the tests, so it aims at "clearly a piano,
cheap and exactly reproducible", not at realism. The sound model, for a note of MIDI pitch p
(f0 = 440 * 2 ** ((p - 69) / 12)) and velocity v:

* Partials k = 1..K at f_k = k f0 sqrt(1 + B k^2), the stiff-string inharmonicity, with
  B = `inharmonicity(p)` rising with pitch; K <= MAX_PARTIALS and f_K < 0.45 sample_rate.
* Amplitudes |sin(pi k HAMMER_POSITION)| / k ** (1 + tilt): the 1/k spectrum of a struck string,
  the comb of a hammer striking 1/8.3 of the way along it, and a felt tilt that flattens as v
  rises (a hammer hit harder is stiffer, so loud notes are brighter as well as louder); the
  soundboard weakens partials below ~120 Hz.
* A two-stage decay per partial: a fast "prompt sound" and a slow, slightly detuned
  "aftersound" (the coupled unison strings), both decaying faster for higher notes and partials.
* Attack: a raised-cosine ramp of 1-4 ms (faster when louder) and a short low-passed noise burst
  for the hammer thump. Random phases and the noise come from seed, pitch and velocity level.
* Release: the damper ends the note within RELEASE seconds of its (sounding) offset.
* Gain (v / 127) ** 2, and an equal-power pan from bass on the left to treble on the right.

Speed: the brightness of a tone depends only on a quantised velocity level, so one sustained
tone per (pitch, level) is computed per call and every note is a slice of it times its gain and
release. A tone is a matrix product: with t = b M + n (block b, offset n), a damped partial
A e^{-r t} sin(w t + phi) = [A e^{-r bM} sin(w bM + phi)] [e^{-r n} cos(w n)]
                          + [A e^{-r bM} cos(w bM + phi)] [e^{-r n} sin(w n)],
so a chunk of blocks of all partials is coefficients [blocks, 4K] @ basis [4K, M].
"""

import numpy as np
from scipy import signal

from data import midi

MAX_PARTIALS = 24
NUM_LEVELS = 8  # velocity levels that get their own tone colour
HAMMER_POSITION = 1 / 8.3  # striking point as a fraction of the string length
AFTERSOUND = 0.25  # amplitude share of the slow decay stage
PROMPT_SPEEDUP = 5.0  # the prompt sound decays this much faster than the aftersound
DETUNE = 3e-4  # relative detuning of the aftersound strings (~0.5 cent): slow beats
RELEASE = 0.1  # seconds from the damper touching the strings to silence
NOTE_GAIN = 0.12  # peak-ish amplitude of one note at velocity 127; chords stay below 1
PAN_WIDTH = 0.6  # 1.0 would put A0 and C8 fully left and right
_BLOCK = 256  # samples per block of the matrix product
_CHUNK = 8  # blocks per product


def hz(pitch) -> np.ndarray:
  """Equal-tempered fundamental frequency of MIDI pitches, A4 = 440 Hz."""
  return 440.0 * 2.0 ** ((np.asarray(pitch, np.float64) - 69) / 12)


def inharmonicity(pitch) -> np.ndarray:
  """Stiffness coefficient B: about 4e-5 at A0, 4e-4 at C4 and 6e-3 at C8."""
  return 2e-4 * 2.0 ** ((np.asarray(pitch, np.float64) - 48) / 12)


def partial_frequencies(pitch: int, sample_rate: int) -> np.ndarray:
  """f_k of the partials the synthesiser renders for `pitch` (may be empty)."""
  k = np.arange(1, MAX_PARTIALS + 1)
  f = k * hz(pitch) * np.sqrt(1 + inharmonicity(pitch) * k**2)
  return f[f < 0.45 * sample_rate]


def velocity_level(velocity) -> np.ndarray:
  """Quantised velocity level in 0..NUM_LEVELS-1 (the tone colour of a note)."""
  v = np.clip(np.asarray(velocity), 1, 127)
  return ((v - 1) * NUM_LEVELS) // 127


def pan_gains(pitch) -> np.ndarray:
  """Equal-power [left, right] gains of a pitch."""
  x = np.clip(PAN_WIDTH * (np.asarray(pitch, np.float64) - 64.5) / 43.5, -1, 1)
  theta = np.pi / 4 * (1 + x)
  return np.stack([np.cos(theta), np.sin(theta)], -1).astype(np.float32)  # [..., 2]


def _tone(pitch: int, level: int, sample_rate: int, length: int, seed: int) -> np.ndarray:
  """A sustained (undamped) tone at unit gain, `length` samples long."""
  sr = sample_rate
  fk = partial_frequencies(pitch, sr)
  if not len(fk) or length <= 0:
    return np.zeros(max(length, 0), np.float32)
  k = np.arange(1, len(fk) + 1)
  brightness = (level + 0.5) / NUM_LEVELS  # 0..1
  amp = np.abs(np.sin(np.pi * k * HAMMER_POSITION)) / k ** (2.2 - 1.1 * brightness)
  amp *= fk / np.hypot(fk, 120)  # the soundboard radiates little below ~120 Hz
  amp /= np.sqrt(np.sum(amp**2))
  # Aftersound decay rate (1/s): tau = 6 s at A0 halving every 18 semitones, faster for higher
  # partials and much faster above a few kHz (losses grow with frequency).
  rate = (1 / 6.0) * 2.0 ** ((pitch - 21) / 18) * (1 + 0.2 * (k - 1)) + (fk / 2500) ** 2
  rng = np.random.default_rng([seed, pitch, level])
  phase = rng.uniform(0, 2 * np.pi, len(k))
  # Components: the prompt sound, then the detuned aftersound.
  a = np.concatenate([amp * (1 - AFTERSOUND), amp * AFTERSOUND])  # [C]
  r = np.concatenate([rate * PROMPT_SPEEDUP, rate]) / sr  # [C] per sample
  w = 2 * np.pi / sr * np.concatenate([fk, fk * (1 + DETUNE)])  # [C] rad per sample
  phi = np.concatenate([phase, phase])  # [C]

  n = np.arange(_BLOCK)
  decay = np.exp(-np.outer(r, n))  # [C, M]
  basis = np.concatenate([decay * np.cos(np.outer(w, n)),
                          decay * np.sin(np.outer(w, n))]).astype(np.float32)  # [2C, M]
  t0 = np.arange(-(-length // _BLOCK))[:, None] * _BLOCK  # [B, 1] first sample of each block
  env = a * np.exp(-r * t0)  # [B, C]
  env[env < 1e-9] = 0  # keep denormals out of the product
  coef = np.concatenate([env * np.sin(w * t0 + phi),
                         env * np.cos(w * t0 + phi)], axis=1).astype(np.float32)  # [B, 2C]
  # Small products: OpenBLAS keeps them on one thread, whose spinning siblings would otherwise
  # fight the corpus writer's worker processes for the cores.
  x = np.concatenate([coef[i:i + _CHUNK] @ basis for i in range(0, len(coef), _CHUNK)])
  x = x.ravel()[:length]  # [T]

  # Hammer: a ramp of 4 ms (soft) to 1 ms (hard) and a 3 ms thump of low-passed noise.
  attack = max(2, int(sr * (4 - 3 * brightness) / 1000))
  m = min(attack, length)
  x[:m] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(m) / attack)
  m = min(int(0.03 * sr), length)
  cutoff = min(0.45 * sr, 2 * hz(pitch) + 4000 * brightness)
  b, a_lp = signal.butter(2, cutoff, fs=sr)
  noise = signal.lfilter(b, a_lp, rng.standard_normal(m)) * np.exp(-np.arange(m) / (0.003 * sr))
  x[:m] += (0.3 * brightness * noise).astype(np.float32)
  return x


def _release(num: int) -> np.ndarray:
  """The damper: exponential decay with a raised-cosine fade to exactly zero."""
  u = np.arange(num) / num
  return (np.exp(-5 * u) * (0.5 + 0.5 * np.cos(np.pi * u))).astype(np.float32)


def render(notes: midi.Notes, sample_rate: int, num_samples: int | None = None,
           seed: int = 0) -> np.ndarray:
  """Renders notes as a stereo piano.

  Args:
    notes: onsets and *sounding* offsets in seconds (sustain applied, as `midi.load_notes`
      returns them), pitches and velocities.
    sample_rate: in Hz.
    num_samples: length of the output; by default until the last note has been damped.
    seed: chooses partial phases and hammer noise; the same inputs give the same samples.

  Returns:
    float32 [num_samples, 2] in [-1, 1] (clipped, which loud dense chords may need).
  """
  sr = sample_rate
  if num_samples is None:
    num_samples = int(np.ceil((notes.end_time + RELEASE) * sr))
  out = np.zeros((num_samples, 2), np.float32)  # [T, 2]
  if not len(notes):
    return out
  start = np.round(notes.onsets * sr).astype(np.int64)
  hold = np.maximum(np.round(notes.offsets * sr).astype(np.int64) - start, 1)
  tail = int(round(RELEASE * sr))
  length = np.minimum(hold + tail, num_samples - start)  # samples written per note
  start_clip = np.maximum(start, 0)
  release = _release(tail)
  levels = velocity_level(notes.velocities)
  keys = notes.pitches.astype(np.int64) * NUM_LEVELS + levels
  gain = NOTE_GAIN * (np.clip(notes.velocities, 1, 127) / 127.0) ** 2
  for key in np.unique(keys):
    idx = np.flatnonzero((keys == key) & (length > 0) & (start + length > 0))
    if not len(idx):
      continue
    pitch, level = divmod(int(key), NUM_LEVELS)
    tone = _tone(pitch, level, sr, int(length[idx].max()), seed)
    pan = pan_gains(pitch)  # [2]
    for i in idx:
      seg = tone[:length[i]] * np.float32(gain[i])
      r = seg[hold[i]:]
      r *= release[:len(r)]
      seg = seg[start_clip[i] - start[i]:]  # notes starting before sample 0
      out[start_clip[i]:start_clip[i] + len(seg)] += seg[:, None] * pan
  return np.clip(out, -1, 1, out=out)
