"""A small additive synthesiser: `Notes` in, stereo float32 audio out, in five instruments.

It voices the embedded corpus (data/corpus.py) and the tests, so it aims at "clearly that
instrument, cheap and exactly reproducible", not at realism. Every instrument of
data.specs.INSTRUMENTS is a `Preset` over one machinery: a note of MIDI pitch p
(f0 = 440 * 2 ** ((p - 69) / 12)) and velocity v is a sum of exponentially damped partials with
random phases, a raised-cosine attack ramp starting at the note's onset sample, a short burst
of filtered noise, a release from its (sounding) offset that fades to exactly zero, a gain
(v / 127) ** velocity_exponent, and an equal-power pan from bass on the left to treble on the
right. Phases and noise come from the seed, the pitch, the velocity level and the instrument.
Partials stay below 0.45 sample_rate. The presets:

* piano: partials k = 1..K at f_k = k f0 sqrt(1 + B k^2), the stiff-string inharmonicity, with
  B = `inharmonicity(p)` rising with pitch; K <= MAX_PARTIALS and f_K < 0.45 sample_rate.
  Amplitudes |sin(pi k HAMMER_POSITION)| / k ** (1 + tilt): the 1/k spectrum of a struck
  string, the comb of a hammer striking 1/8.3 of the way along it, and a felt tilt that flattens
  as v rises (a hammer hit harder is stiffer, so loud notes are brighter as well as louder); the
  soundboard weakens partials below ~120 Hz. A two-stage decay per partial: a fast "prompt
  sound" and a slow, slightly detuned "aftersound" (the coupled unison strings), both decaying
  faster for higher notes and partials. Attack 1-4 ms (faster when louder) with a low-passed
  noise thump; the damper ends the note within RELEASE seconds; gain (v / 127) ** 2.
* organ: a flue-pipe registration, 8' + 4' + 2 2/3' + 2' ranks (harmonics 1, 2, 3, 4 of f0, each
  pipe with weak harmonics of its own), so even and odd partials; no decay while held; a
  20-35 ms attack (bass pipes speak slower) with a band-passed "chiff" of wind noise; a 40 ms
  release; velocity changes loudness a little (a swell box), not colour.
* harpsichord: a plucked string plucked near its end, |sin(pi k P)| / sqrt(k) with P from 1/12
  (bass) to 1/7 (treble), a flat-ish spectrum up to HARPSICHORD_PARTIALS partials, slightly
  inharmonic; two unison choirs (one slightly detuned); one decay stage, faster for higher
  notes and partials; a 1 ms attack with a bright pluck noise; velocity changes loudness only a
  little; the damper ends it in 60 ms with a soft release click (the jack falling back).
* strings: a bowed ensemble, the 1/k spectrum of a sawtooth through a body resonance (peaks
  near 290 Hz, 550 Hz and the 2.8 kHz bridge hill, little below 150 Hz or above 5 kHz);
  sustained while held, with a 5.5 Hz vibrato of VIBRATO_CENTS; a 60-100 ms attack (bass
  slower) with a little bow noise; a 0.2 s release; louder bowing is brighter.
* mallet: a marimba-like tuned bar, inharmonic modes at 1, 3.9 and 9.2 f0, the upper ones
  weaker and dying much faster; the fundamental decays in 0.3-1 s (treble faster); a 0.5 ms
  attack with a mallet click; a harder stroke is brighter.

Speed: the colour of a tone depends only on a quantised velocity level, so one sustained
tone per (pitch, level) is computed per call and every note is a slice of it times its gain and
release. A tone is a matrix product: with t = b M + n (block b, offset n), a damped partial
A e^{-r t} sin(w t + phi) = [A e^{-r bM} sin(w bM + phi)] [e^{-r n} cos(w n)]
                          + [A e^{-r bM} cos(w bM + phi)] [e^{-r n} sin(w n)],
so a chunk of blocks of all partials is coefficients [blocks, 4K] @ basis [4K, M]. Vibrato
stays in that form: a phase-modulated partial sin(w t + phi + beta sin(u t + psi)) is the sum
of sidebands J_n(beta) sin((w + n u) t + phi + n psi) (Jacobi-Anger).
"""

import dataclasses
from typing import Callable

import numpy as np
from scipy import signal
from scipy import special

from data import midi
from data import specs

MAX_PARTIALS = 24  # of the piano, the organ and the strings
NUM_LEVELS = 8  # velocity levels that get their own piano tone colour
HAMMER_POSITION = 1 / 8.3  # striking point as a fraction of the string length
AFTERSOUND = 0.25  # amplitude share of the slow decay stage
PROMPT_SPEEDUP = 5.0  # the prompt sound decays this much faster than the aftersound
DETUNE = 3e-4  # relative detuning of the aftersound strings (~0.5 cent): slow beats
RELEASE = 0.1  # seconds from the damper touching the strings to silence (the piano)
NOTE_GAIN = 0.12  # peak-ish amplitude of one piano note at velocity 127; chords stay below 1
PAN_WIDTH = 0.6  # 1.0 would put A0 and C8 fully left and right
# The organ's ranks: (harmonic of f0 its pipes sound at, gain); a flue pipe's own harmonics
# fall by PIPE_ROLLOFF each.
ORGAN_RANKS = ((1, 1.0), (2, 0.6), (3, 0.45), (4, 0.3))  # 8', 4', 2 2/3', 2'
PIPE_ROLLOFF = 0.3
HARPSICHORD_PARTIALS = 40
MALLET_MODES = ((1.0, 1.0), (3.9, 0.35), (9.2, 0.12))  # (frequency ratio, amplitude)
VIBRATO_RATE = 5.5  # Hz
VIBRATO_CENTS = 6.0
_BLOCK = 256  # samples per block of the matrix product
_CHUNK = 8  # blocks per product


def hz(pitch) -> np.ndarray:
  """Equal-tempered fundamental frequency of MIDI pitches, A4 = 440 Hz."""
  return 440.0 * 2.0 ** ((np.asarray(pitch, np.float64) - 69) / 12)


def inharmonicity(pitch) -> np.ndarray:
  """Stiffness coefficient B: about 4e-5 at A0, 4e-4 at C4 and 6e-3 at C8."""
  return 2e-4 * 2.0 ** ((np.asarray(pitch, np.float64) - 48) / 12)


def partial_frequencies(pitch: int, sample_rate: int) -> np.ndarray:
  """f_k of the partials the piano renders for `pitch` (may be empty)."""
  k = np.arange(1, MAX_PARTIALS + 1)
  f = k * hz(pitch) * np.sqrt(1 + inharmonicity(pitch) * k**2)
  return f[f < 0.45 * sample_rate]


def velocity_level(velocity, num_levels: int = NUM_LEVELS) -> np.ndarray:
  """Quantised velocity level in 0..num_levels-1 (the tone colour of a note)."""
  v = np.clip(np.asarray(velocity), 1, 127)
  return ((v - 1) * num_levels) // 127


def pan_gains(pitch) -> np.ndarray:
  """Equal-power [left, right] gains of a pitch."""
  x = np.clip(PAN_WIDTH * (np.asarray(pitch, np.float64) - 64.5) / 43.5, -1, 1)
  theta = np.pi / 4 * (1 + x)
  return np.stack([np.cos(theta), np.sin(theta)], -1).astype(np.float32)  # [..., 2]


@dataclasses.dataclass(frozen=True)
class Burst:
  """Noise through a 2nd-order Butterworth filter, decaying exponentially."""
  gain: float
  band: float | tuple[float, float]  # low-pass cutoff, or band-pass (low, high), in Hz
  decay: float  # seconds (time constant)
  duration: float  # seconds


@dataclasses.dataclass(frozen=True)
class Preset:
  """The sound model of one instrument; `brightness` is (level + 0.5) / num_levels in 0..1."""
  # (pitch, brightness, sample_rate) -> frequencies [K] Hz, amplitudes [K] (normalised to unit
  # power afterwards), decay rates [K] 1/s (0: sustained while held).
  modes: Callable[[int, float, int], tuple[np.ndarray, np.ndarray, np.ndarray]]
  attack: Callable[[int, float], float]  # (pitch, brightness) -> ramp in ms
  burst: Callable[[int, float, int], Burst]  # (pitch, brightness, sample_rate) -> onset noise
  release: float  # seconds from the (sounding) offset to silence
  gain: float  # peak-ish amplitude of one note at velocity 127
  velocity_exponent: float  # gain (v / 127) ** this
  num_levels: int = 1  # velocity levels with their own tone colour (1: loudness only)
  # A second, detuned copy of every partial: (its amplitude share, how much faster the first
  # copy decays, relative detuning); share 0: none.
  second: tuple[float, float, float] = (0.0, 1.0, 0.0)
  vibrato: tuple[float, float] = (0.0, 0.0)  # (rate Hz, depth cents); depth 0: none
  click: Burst | None = None  # noise at the release, its gain relative to the note's


def _harmonics(pitch, sample_rate, num) -> np.ndarray:
  f = np.arange(1, num + 1) * hz(pitch)
  return f[f < 0.45 * sample_rate]


def _piano_modes(pitch, brightness, sr):
  fk = partial_frequencies(pitch, sr)
  k = np.arange(1, len(fk) + 1)
  amp = np.abs(np.sin(np.pi * k * HAMMER_POSITION)) / k ** (2.2 - 1.1 * brightness)
  amp *= fk / np.hypot(fk, 120)  # the soundboard radiates little below ~120 Hz
  # Aftersound decay rate (1/s): tau = 6 s at A0 halving every 18 semitones, faster for higher
  # partials and much faster above a few kHz (losses grow with frequency).
  rate = (1 / 6.0) * 2.0 ** ((pitch - 21) / 18) * (1 + 0.2 * (k - 1)) + (fk / 2500) ** 2
  return fk, amp, rate


def _organ_modes(pitch, brightness, sr):
  del brightness
  fk = _harmonics(pitch, sr, MAX_PARTIALS)
  amp = np.zeros(len(fk))
  for harmonic, g in ORGAN_RANKS:  # a rank's pipe h sounds harmonic `harmonic * h` of f0
    for h in range(1, len(fk) // harmonic + 1):
      amp[harmonic * h - 1] += g * PIPE_ROLLOFF ** (h - 1)
  amp *= fk / np.hypot(fk, 60)  # small pipes' bass
  return fk, amp, np.zeros(len(fk))


def _harpsichord_modes(pitch, brightness, sr):
  del brightness
  k = np.arange(1, HARPSICHORD_PARTIALS + 1)
  fk = k * hz(pitch) * np.sqrt(1 + 0.1 * inharmonicity(pitch) * k**2)  # thin wire strings
  k, fk = k[fk < 0.45 * sr], fk[fk < 0.45 * sr]
  # Plucked at a fixed distance from the nut: a larger fraction of the shorter treble strings.
  p = 1 / np.interp(pitch, [29, 89], [12, 7])
  amp = (np.abs(np.sin(np.pi * k * p)) + 0.05) / np.sqrt(k) * fk / np.hypot(fk, 100)
  # tau = 8 s at F1 halving every 15 semitones; high partials die in a fraction of a second.
  rate = (1 / 8.0) * 2.0 ** ((pitch - 29) / 15) * (1 + 0.15 * (k - 1)) + (fk / 3000) ** 2
  return fk, amp, rate


def _strings_modes(pitch, brightness, sr):
  fk = _harmonics(pitch, sr, MAX_PARTIALS)
  k = np.arange(1, len(fk) + 1)
  body = 0.3 + sum(g / (1 + ((fk - f) / w) ** 2)
                   for f, w, g in ((290, 70, 0.5), (550, 150, 0.6), (2800, 1200, 1.2)))
  body *= fk / np.hypot(fk, 150) / (1 + (fk / 5000) ** 4)
  return fk, body / k ** (1.1 - 0.4 * brightness), np.zeros(len(fk))


def _mallet_modes(pitch, brightness, sr):
  ratio, amp = (np.array(x) for x in zip(*MALLET_MODES))
  fk = ratio * hz(pitch)
  amp = amp * (0.4 + 1.2 * brightness) ** np.arange(len(amp))  # harder mallets: upper modes
  # The fundamental: tau 1 s at A2 down to 0.3 s at C7; upper modes die far faster.
  rate = 2.0 ** ((np.clip(pitch, 45, 96) - 45) / 29) * ratio ** 1.5
  keep = fk < 0.45 * sr
  return fk[keep], amp[keep], rate[keep]


def _band(low, high, sr):
  return (min(low, 0.4 * sr), min(high, 0.45 * sr))


PRESETS = {
    'piano': Preset(
        _piano_modes, attack=lambda pitch, b: 4 - 3 * b,
        burst=lambda pitch, b, sr: Burst(0.3 * b, min(0.45 * sr, 2 * hz(pitch) + 4000 * b),
                                         0.003, 0.03),
        release=RELEASE, gain=NOTE_GAIN, velocity_exponent=2, num_levels=NUM_LEVELS,
        second=(AFTERSOUND, PROMPT_SPEEDUP, DETUNE)),
    'organ': Preset(
        _organ_modes, attack=lambda pitch, b: 20 + 15 * np.clip((84 - pitch) / 48, 0, 1),
        burst=lambda pitch, b, sr: Burst(0.05, _band(4 * hz(pitch), 8 * hz(pitch) + 2000, sr),
                                         0.012, 0.08),
        release=0.04, gain=0.05, velocity_exponent=0.5),
    'harpsichord': Preset(
        _harpsichord_modes, attack=lambda pitch, b: 1.0,
        burst=lambda pitch, b, sr: Burst(0.25, _band(2000, 8000, sr), 0.0015, 0.015),
        release=0.06, gain=0.05, velocity_exponent=0.25, second=(0.4, 1.0, 6e-4),
        click=Burst(0.15, 1500.0, 0.004, 0.03)),
    'strings': Preset(
        _strings_modes, attack=lambda pitch, b: 60 + 40 * np.clip((84 - pitch) / 48, 0, 1),
        burst=lambda pitch, b, sr: Burst(0.02, _band(2000, 6000, sr), 0.03, 0.15),
        release=0.2, gain=0.08, velocity_exponent=1.5, num_levels=4,
        vibrato=(VIBRATO_RATE, VIBRATO_CENTS)),
    'mallet': Preset(
        _mallet_modes, attack=lambda pitch, b: 0.5,
        burst=lambda pitch, b, sr: Burst(0.3 * b, min(0.45 * sr, 2 * hz(pitch) + 5000 * b),
                                         0.001, 0.01),
        release=0.15, gain=0.15, velocity_exponent=2, num_levels=4),
}
assert tuple(PRESETS) == specs.INSTRUMENTS


def preset(instrument: str) -> Preset:
  """The preset of one of data.specs.INSTRUMENTS; ValueError naming the valid ones."""
  if instrument not in PRESETS:
    raise ValueError(f'instrument={instrument!r}: expected one of {", ".join(PRESETS)}')
  return PRESETS[instrument]


def _vibrato(a, r, w, phi, rate, cents, sr, rng):
  """The components of phase-modulated partials: each becomes its sidebands (Jacobi-Anger)."""
  u = 2 * np.pi * rate / sr  # rad per sample
  beta = w * (2 ** (cents / 1200) - 1) / u  # [C] modulation index: frequency swing / rate
  n = np.arange(-int(np.ceil(beta.max())) - 4, int(np.ceil(beta.max())) + 5)  # [N]
  amp = a[:, None] * special.jv(n, beta[:, None])  # [C, N]
  psi = rng.uniform(0, 2 * np.pi)
  phase = phi[:, None] + n * psi + np.pi * (amp < 0)  # [C, N] signs into phases
  keep = np.abs(amp) > 1e-3 * np.abs(amp).max()  # drops ~1e-5 of the power
  return (np.abs(amp)[keep], np.broadcast_to(r[:, None], amp.shape)[keep],
          (w[:, None] + n * u)[keep], phase[keep])


def _damped_sum(a, r, w, phi, length):
  """sum_c a_c e^{-r_c t} sin(w_c t + phi_c) for t < length, by blocks (module docstring)."""
  n = np.arange(_BLOCK)
  decay = np.exp(-np.outer(r, n))  # [C, M]
  basis = np.concatenate([decay * np.cos(np.outer(w, n)),
                          decay * np.sin(np.outer(w, n))]).astype(np.float32)  # [2C, M]
  t0 = np.arange(-(-length // _BLOCK))[:, None] * _BLOCK  # [B, 1] first sample of each block
  env = a * np.exp(-r * t0)  # [B, C]
  env[env < 1e-9] = 0  # keep denormals out of the product
  coef = np.concatenate([env * np.sin(w * t0 + phi),
                         env * np.cos(w * t0 + phi)], axis=1).astype(np.float32)  # [B, 2C]
  # Small products: OpenBLAS keeps those of M N K < 2^18 on one thread, whose spinning siblings
  # would otherwise fight the corpus writer's worker processes for the cores (and did: a chunk
  # of 8 blocks of the strings' ~200 components ran ten times slower).
  chunk = max(1, min(_CHUNK, (2**18 - 1) // basis.size))
  x = np.concatenate([coef[i:i + chunk] @ basis for i in range(0, len(coef), chunk)])
  return x.ravel()[:length]  # [T]


def _noise(burst: Burst, sr: int, length: int, rng) -> np.ndarray:
  m = min(int(burst.duration * sr), length)
  b, a = signal.butter(2, burst.band, 'lowpass' if np.isscalar(burst.band) else 'bandpass',
                       fs=sr)
  noise = signal.lfilter(b, a, rng.standard_normal(m)) * np.exp(-np.arange(m) / (burst.decay * sr))
  return (burst.gain * noise).astype(np.float32)


def _tone(instrument: str, pitch: int, level: int, sample_rate: int, length: int,
          seed: int) -> tuple[np.ndarray, np.ndarray | None]:
  """A sustained (undamped) tone at unit gain, `length` samples long, and its release click."""
  sr = sample_rate
  p = PRESETS[instrument]
  brightness = (level + 0.5) / p.num_levels  # 0..1
  fk, amp, rate = p.modes(pitch, brightness, sr)
  if not len(fk) or length <= 0:
    return np.zeros(max(length, 0), np.float32), None
  amp /= np.sqrt(np.sum(amp**2))
  i = specs.INSTRUMENTS.index(instrument)  # the piano keeps its phases of old
  rng = np.random.default_rng([seed, pitch, level] + ([i] if i else []))
  phase = rng.uniform(0, 2 * np.pi, len(fk))
  share, speedup, detune = p.second
  if share:  # the piano's prompt sound then its detuned aftersound; the harpsichord's choirs
    a = np.concatenate([amp * (1 - share), amp * share])  # [C]
    r = np.concatenate([rate * speedup, rate]) / sr  # [C] per sample
    w = 2 * np.pi / sr * np.concatenate([fk, fk * (1 + detune)])  # [C] rad per sample
    phi = np.concatenate([phase, phase])  # [C]
  else:
    a, r, w, phi = amp, rate / sr, 2 * np.pi / sr * fk, phase
  if p.vibrato[1]:
    a, r, w, phi = _vibrato(a, r, w, phi, *p.vibrato, sr, rng)
  x = _damped_sum(a, r, w, phi, length)

  attack = max(2, int(sr * p.attack(pitch, brightness) / 1000))
  m = min(attack, length)
  x[:m] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(m) / attack)
  noise = _noise(p.burst(pitch, brightness, sr), sr, length, rng)
  x[:len(noise)] += noise
  return x, None if p.click is None else _noise(p.click, sr, length, rng)


def _release(num: int) -> np.ndarray:
  """The damper: exponential decay with a raised-cosine fade to exactly zero."""
  u = np.arange(num) / num
  return (np.exp(-5 * u) * (0.5 + 0.5 * np.cos(np.pi * u))).astype(np.float32)


def render(notes: midi.Notes, sample_rate: int, num_samples: int | None = None,
           seed: int = 0, instrument: str = 'piano') -> np.ndarray:
  """Renders notes as a stereo instrument.

  Args:
    notes: onsets and *sounding* offsets in seconds (sustain applied, as `midi.load_notes`
      returns them), pitches and velocities.
    sample_rate: in Hz.
    num_samples: length of the output; by default until the last note has been released.
    seed: chooses partial phases and noise; the same inputs give the same samples.
    instrument: one of data.specs.INSTRUMENTS. Every instrument starts a note's attack at its
      onset sample, so renderings of one score in several instruments share their onsets.

  Returns:
    float32 [num_samples, 2] in [-1, 1] (clipped, which loud dense chords may need).
  """
  p = preset(instrument)
  sr = sample_rate
  if num_samples is None:
    num_samples = int(np.ceil((notes.end_time + p.release) * sr))
  out = np.zeros((num_samples, 2), np.float32)  # [T, 2]
  if not len(notes):
    return out
  start = np.round(notes.onsets * sr).astype(np.int64)
  hold = np.maximum(np.round(notes.offsets * sr).astype(np.int64) - start, 1)
  tail = int(round(p.release * sr))
  length = np.minimum(hold + tail, num_samples - start)  # samples written per note
  start_clip = np.maximum(start, 0)
  release = _release(tail)
  levels = velocity_level(notes.velocities, p.num_levels)
  keys = notes.pitches.astype(np.int64) * p.num_levels + levels
  gain = p.gain * (np.clip(notes.velocities, 1, 127) / 127.0) ** p.velocity_exponent
  for key in np.unique(keys):
    idx = np.flatnonzero((keys == key) & (length > 0) & (start + length > 0))
    if not len(idx):
      continue
    pitch, level = divmod(int(key), p.num_levels)
    tone, click = _tone(instrument, pitch, level, sr, int(length[idx].max()), seed)
    pan = pan_gains(pitch)  # [2]
    for i in idx:
      seg = tone[:length[i]] * np.float32(gain[i])
      r = seg[hold[i]:]
      r *= release[:len(r)]
      if click is not None:
        c = click[:len(r)]
        r[:len(c)] += c * np.float32(gain[i])
      seg = seg[start_clip[i] - start[i]:]  # notes starting before sample 0
      out[start_clip[i]:start_clip[i] + len(seg)] += seg[:, None] * pan
  return np.clip(out, -1, 1, out=out)
