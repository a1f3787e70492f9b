"""MIDI reading, sustain-pedal handling and frame-level piano features.

Conventions (shared by the dataset builder, the synthesiser and every model):

* A note is (onset, offset, pitch, velocity): onset and offset in seconds from the start of the
  file, pitch a MIDI key number, velocity in 1..127.
* The sustain pedal (CC64) is down while its value is >= 64. With `sustain=True` a note whose key
  is released while the pedal is down keeps sounding until the pedal is released, or until the
  same key is struck again, whichever comes first; a key struck again while its previous note
  still sounds (held or sustained) ends that note at the new onset. This is the rule of MAESTRO
  and Onsets and Frames (note_seq's `apply_sustain_control_changes`).
* Frame features live on a grid anchored at audio sample 0: frame f covers samples
  [f * hop_length, (f + 1) * hop_length) at `sample_rate`. A note is active in every frame its
  interval [onset, offset) overlaps (at least its onset frame); its onset is marked in the frame
  that holds its first sample. Pitch index k is MIDI key 21 + k (the 88 piano keys).
"""

import dataclasses
import math
import os

from absl import logging
import numpy as np
import pretty_midi

from data.specs import NUM_KEYS

MIN_PITCH = 21  # A0
SUSTAIN_CC = 64


class MidiError(ValueError):
  """A MIDI file that cannot be used; the message names the file and the fault."""


@dataclasses.dataclass(frozen=True)
class Notes:
  """A list of notes as parallel arrays, sorted by (onset, pitch)."""
  onsets: np.ndarray  # [N] float64 seconds
  offsets: np.ndarray  # [N] float64 seconds
  pitches: np.ndarray  # [N] int32 MIDI key numbers
  velocities: np.ndarray  # [N] int32 in 1..127

  def __len__(self):
    return len(self.onsets)

  @property
  def end_time(self) -> float:
    return float(self.offsets.max()) if len(self) else 0.0


def make_notes(onsets, offsets, pitches, velocities) -> Notes:
  """Builds `Notes` from sequences, sorted by (onset, pitch)."""
  onsets = np.asarray(onsets, np.float64)
  order = np.lexsort((np.asarray(pitches), onsets))
  return Notes(
      onsets=onsets[order],
      offsets=np.asarray(offsets, np.float64)[order],
      pitches=np.asarray(pitches, np.int32)[order],
      velocities=np.asarray(velocities, np.int32)[order])


def pedal_intervals(control_changes, number=SUSTAIN_CC) -> list[tuple[float, float]]:
  """[(down, up), ...] times of a pedal from pretty_midi ControlChange events.

  A pedal still down at the last event is released at +inf (callers clip it).
  """
  events = sorted((c.time, c.value) for c in control_changes if c.number == number)
  intervals, down = [], None
  for t, value in events:
    if value >= 64 and down is None:
      down = t
    elif value < 64 and down is not None:
      intervals.append((down, t))
      down = None
  if down is not None:
    intervals.append((down, math.inf))
  return intervals


def apply_sustain(notes: Notes, pedals: list[tuple[float, float]],
                  end_time: float | None = None) -> Notes:
  """Extends key releases by the sustain pedal and cuts notes at re-strikes (module docstring).

  A pedal still down at the end releases at `end_time` (default: the last key or pedal event).
  """
  offsets = notes.offsets.copy()
  if pedals:
    downs = np.array([d for d, _ in pedals])
    ups = np.array([u for _, u in pedals])
    # The pedal interval (if any) in which each key release falls: down <= release < up.
    i = np.searchsorted(downs, notes.offsets, side='right') - 1
    held = (i >= 0) & (notes.offsets < ups[np.maximum(i, 0)])
    offsets[held] = ups[i[held]]
  # A re-strike of the same key ends the sounding note.
  for pitch in np.unique(notes.pitches):
    idx = np.flatnonzero(notes.pitches == pitch)  # sorted by onset already
    nxt = notes.onsets[idx[1:]]
    offsets[idx[:-1]] = np.minimum(offsets[idx[:-1]], nxt)
  if end_time is None:
    end_time = max([float(notes.offsets.max(initial=0.0))] +
                   [t for interval in pedals for t in interval if t < math.inf])
  offsets = np.minimum(offsets, end_time)
  keep = offsets > notes.onsets  # duplicate strikes at one instant leave one note
  return Notes(notes.onsets[keep], offsets[keep], notes.pitches[keep], notes.velocities[keep])


def load_notes(path: str | os.PathLike, sustain: bool = True) -> Notes:
  """Reads the notes of every non-drum track of a MIDI file.

  Args:
    path: a .mid/.midi file.
    sustain: apply the sustain pedal of each track to its own notes (module docstring).

  Returns:
    `Notes`; pitches outside the 88 piano keys are kept (see `frame_features`).

  Raises:
    MidiError: the file is missing, does not parse, or holds no notes.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise MidiError(f'{path}: MIDI file is missing')
  try:
    pm = pretty_midi.PrettyMIDI(path)
  except Exception as e:  # pretty_midi/mido raise many types for bad files
    raise MidiError(f'{path}: MIDI does not parse ({type(e).__name__}: {e})') from None
  parts = []
  for inst in pm.instruments:
    if inst.is_drum or not inst.notes:
      continue
    n = make_notes([x.start for x in inst.notes], [x.end for x in inst.notes],
                   [x.pitch for x in inst.notes], [x.velocity for x in inst.notes])
    if sustain:
      n = apply_sustain(n, pedal_intervals(inst.control_changes), pm.get_end_time())
    parts.append(n)
  if not parts:
    raise MidiError(f'{path}: MIDI holds no notes')
  return make_notes(*(np.concatenate([getattr(p, f.name) for p in parts])
                      for f in dataclasses.fields(Notes)))


def frame_features(notes: Notes, num_frames: int, hop_length: int,
                   sample_rate: int) -> dict[str, np.ndarray]:
  """Frame-level piano features on the grid of the module docstring.

  Args:
    notes: the piece's notes (sustain already applied, if wanted).
    num_frames: frames to produce; notes past the last frame are cut off.
    hop_length: audio samples per frame.
    sample_rate: the audio sample rate the grid is anchored to.

  Returns:
    `pianoroll` [F, 88] bool (key sounding), `onsets` [F, 88] bool (a note starts), and
    `velocities` [F, 88] uint8 (velocity of the sounding note, 0 when silent; the loudest one
    where notes of one key overlap). The onset velocity is `velocities * onsets`.
  """
  roll = np.zeros((num_frames, NUM_KEYS), bool)
  onsets = np.zeros((num_frames, NUM_KEYS), bool)
  vel = np.zeros((num_frames, NUM_KEYS), np.uint8)
  keys = notes.pitches - MIN_PITCH
  in_range = (keys >= 0) & (keys < NUM_KEYS)
  if not in_range.all():
    logging.warning('Dropping %d notes outside the piano range', int((~in_range).sum()))
  start = np.floor(notes.onsets * sample_rate / hop_length).astype(np.int64)
  stop = np.ceil(notes.offsets * sample_rate / hop_length).astype(np.int64)
  stop = np.maximum(stop, start + 1)
  for s, e, k, v in zip(start[in_range], stop[in_range], keys[in_range],
                        notes.velocities[in_range]):
    if s >= num_frames:
      continue
    roll[s:e, k] = True
    np.maximum(vel[s:e, k], np.uint8(v), out=vel[s:e, k])
    if s >= 0:
      onsets[s, k] = True
  return {'pianoroll': roll, 'onsets': onsets, 'velocities': vel}


def write_midi(path: str | os.PathLike, notes: Notes,
               pedals: list[tuple[float, float]] = (), program: int = 0) -> None:
  """Writes key presses (un-sustained offsets) and sustain-pedal intervals as one piano track."""
  pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
  inst = pretty_midi.Instrument(program=program, name='Piano')
  for on, off, p, v in zip(notes.onsets, notes.offsets, notes.pitches, notes.velocities):
    inst.notes.append(pretty_midi.Note(int(v), int(p), float(on), float(off)))
  for down, up in pedals:
    inst.control_changes.append(pretty_midi.ControlChange(SUSTAIN_CC, 127, float(down)))
    inst.control_changes.append(pretty_midi.ControlChange(SUSTAIN_CC, 0, float(up)))
  pm.instruments.append(inst)
  pm.write(os.fspath(path))
