"""Performance events: piano notes as the token sequence of Oore et al. (2018), which the Music
Transformer (Huang et al. 2019) models, and the paper's augmentation.

Vocabulary (`VOCAB_SIZE` = 388 tokens):

  [0, 128)    NOTE_ON of MIDI key k
  [128, 256)  NOTE_OFF of key k
  [256, 356)  TIME_SHIFT of 1 .. 100 steps of 10 ms (10 ms .. 1 s); a longer gap takes several
  [356, 388)  VELOCITY bin 1 .. 32: the velocity of the NOTE_ONs that follow

A performance is a piece's notes after the sustain pedal (data/midi.py applies MAESTRO's rule),
so a note's NOTE_OFF comes when it stops sounding. Times are rounded to the 10-ms grid; a note
shorter than one step lasts one step. At one instant the NOTE_OFFs come first, then the
VELOCITY and NOTE_ONs, each group by key, so a key struck again the moment its note ends stays
two notes (two strikes of one key within one step keep the last). A VELOCITY event precedes a
NOTE_ON only where the bin changes. Velocity v in 1..127 falls in bin (v - 1) // 4 + 1 and
decodes to the bin's least velocity, so a round trip keeps it to within 3.
"""

import numpy as np

from data import midi

NUM_KEYS = 128
MAX_SHIFT = 100  # steps of one TIME_SHIFT event
NUM_VELOCITY_BINS = 32
STEPS_PER_SECOND = 100  # 10 ms steps

NOTE_ON = 0
NOTE_OFF = NOTE_ON + NUM_KEYS
TIME_SHIFT = NOTE_OFF + NUM_KEYS  # token TIME_SHIFT + s - 1 shifts by s steps
VELOCITY = TIME_SHIFT + MAX_SHIFT  # token VELOCITY + b - 1 sets bin b
VOCAB_SIZE = VELOCITY + NUM_VELOCITY_BINS
_BIN_WIDTH = 4  # velocities per bin: ceil(128 / 32)

# The Music Transformer's augmentation of MAESTRO: every transposition of up to 3 semitones
# and these time stretches, drawn uniformly per example.
TRANSPOSITIONS = tuple(range(-3, 4))
STRETCHES = (0.95, 0.975, 1.0, 1.025, 1.05)


def velocity_bin(velocity) -> np.ndarray:
  """Velocities 1..127 -> bins 1..32."""
  return (np.asarray(velocity) - 1) // _BIN_WIDTH + 1


def bin_velocity(b) -> np.ndarray:
  """Bins 1..32 -> the least velocity of each bin."""
  return (np.asarray(b) - 1) * _BIN_WIDTH + 1


def _on_grid(notes: midi.Notes) -> tuple[np.ndarray, ...]:
  """(onset step, offset step, key, velocity) of each note on the 10-ms grid, one key's notes
  not overlapping: of two strikes in one step the last stays, and a note lengthened to one step
  ends where its key is struck again."""
  on = np.round(notes.onsets * STEPS_PER_SECOND).astype(np.int64)
  off = np.maximum(np.round(notes.offsets * STEPS_PER_SECOND).astype(np.int64), on + 1)
  keep = np.ones(len(notes), bool)
  order = np.lexsort((on, notes.pitches))  # by key, then onset
  for a, b in zip(order[:-1], order[1:]):
    if notes.pitches[a] == notes.pitches[b]:
      if on[a] == on[b]:
        keep[a] = False
      else:
        off[a] = min(off[a], on[b])
  return on[keep], off[keep], notes.pitches[keep], notes.velocities[keep]


def quantize(notes: midi.Notes) -> midi.Notes:
  """The notes as `encode` keeps them, with their velocities at the bin's least: what `decode`
  returns for `encode(notes)`."""
  on, off, keys, velocities = _on_grid(notes)
  return midi.make_notes(on / STEPS_PER_SECOND, off / STEPS_PER_SECOND, keys,
                         bin_velocity(velocity_bin(velocities)))


def encode(notes: midi.Notes) -> np.ndarray:
  """Notes (sustain applied) -> performance events, int32 [N]."""
  if len(notes) and (notes.pitches.min() < 0 or notes.pitches.max() >= NUM_KEYS):
    raise ValueError(f'MIDI keys {notes.pitches.min()}..{notes.pitches.max()}: expected 0..127')
  if len(notes) and (notes.velocities.min() < 1 or notes.velocities.max() > 127):
    raise ValueError(f'velocities {notes.velocities.min()}..{notes.velocities.max()}: '
                     'expected 1..127')
  on, off, pitches, velocities = _on_grid(notes)
  n = len(on)
  # (step, 0 = off / 1 = on, key, velocity bin), sorted: offs before ons at one step.
  steps = np.concatenate([off, on])
  kinds = np.repeat([0, 1], n)
  keys = np.concatenate([pitches, pitches])
  bins = np.concatenate([np.zeros(n, np.int64), velocity_bin(velocities)])
  order = np.lexsort((keys, kinds, steps))
  events, now, current_bin = [], 0, None
  for i in order:
    gap = int(steps[i]) - now
    while gap > 0:
      s = min(gap, MAX_SHIFT)
      events.append(TIME_SHIFT + s - 1)
      gap -= s
    now = int(steps[i])
    if kinds[i] == 0:
      events.append(NOTE_OFF + int(keys[i]))
    else:
      if bins[i] != current_bin:
        current_bin = int(bins[i])
        events.append(VELOCITY + current_bin - 1)
      events.append(NOTE_ON + int(keys[i]))
  return np.asarray(events, np.int32)


def decode(events, default_velocity: int = 64) -> midi.Notes:
  """Performance events -> notes, whatever their order (a model's samples): a NOTE_ON of a
  sounding key ends its note there, a NOTE_OFF of a silent key is ignored, NOTE_ONs before any
  VELOCITY take `default_velocity`, and notes still sounding at the end stop at the last
  event's time (one step after their onset at least)."""
  events = np.asarray(events)
  if events.size and (events.min() < 0 or events.max() >= VOCAB_SIZE):
    bad = int(np.flatnonzero((events < 0) | (events >= VOCAB_SIZE))[0])
    raise ValueError(f'event {int(events[bad])} at position {bad}: expected 0..{VOCAB_SIZE - 1}')
  now, velocity, sounding, out = 0, default_velocity, {}, []

  def close(key, end):
    start, v = sounding.pop(key)
    if end > start:
      out.append((start, end, key, v))

  for e in events.tolist():
    if e < NOTE_OFF:
      if e in sounding:
        close(e, now)
      sounding[e] = (now, velocity)
    elif e < TIME_SHIFT:
      if e - NOTE_OFF in sounding:
        close(e - NOTE_OFF, now)
    elif e < VELOCITY:
      now += e - TIME_SHIFT + 1
    else:
      velocity = int(bin_velocity(e - VELOCITY + 1))
  for key in list(sounding):
    close(key, max(now, sounding[key][0] + 1))
  if not out:
    return midi.make_notes([], [], [], [])
  on, off, keys, vel = (np.asarray(c) for c in zip(*out))
  return midi.make_notes(on / STEPS_PER_SECOND, off / STEPS_PER_SECOND, keys, vel)


def elapsed_steps(events: np.ndarray) -> np.ndarray:
  """[..., T] events -> [..., T] the 10 ms steps their time shifts have advanced, up to and
  including each event."""
  events = np.asarray(events)
  shift = (events >= TIME_SHIFT) & (events < VELOCITY)
  return np.cumsum(np.where(shift, events - TIME_SHIFT + 1, 0), axis=-1)


def augment(notes: midi.Notes, transpose: int = 0, stretch: float = 1.0) -> midi.Notes:
  """The notes moved by `transpose` semitones and their times scaled by `stretch`."""
  pitches = notes.pitches + transpose
  if len(notes) and (pitches.min() < 0 or pitches.max() >= NUM_KEYS):
    raise ValueError(f'transpose={transpose} takes MIDI keys {notes.pitches.min()}..'
                     f'{notes.pitches.max()} outside 0..127')
  return midi.make_notes(notes.onsets * stretch, notes.offsets * stretch, pitches,
                         notes.velocities)


def random_augment(notes: midi.Notes, rng: np.random.Generator) -> midi.Notes:
  """`augment` with a transposition and a stretch drawn uniformly from the paper's sets."""
  return augment(notes, int(rng.choice(TRANSPOSITIONS)), float(rng.choice(STRETCHES)))
