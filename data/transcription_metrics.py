"""Transcription scores of Onsets and Frames (Hawthorne et al. 2018, 2019), through mir_eval.

Note scores match each reference note to at most one estimated note of the same pitch
(mir_eval.transcription, pitches in Hz, 50-cent pitch tolerance):

  note                        onsets within 50 ms; offsets ignored
  note_with_offset            and offsets within max(0.2 x the reference duration, 50 ms)
  note_with_offset_velocity   and velocities within 0.1 after mir_eval.transcription_velocity
                              rescales them: the reference to [0, 1] by its min and max, the
                              estimate by the least-squares line onto the matched references
                              (so a transcription whose velocities are an affine map of the
                              truth scores as if exact)

Frame scores count (frame, key) cells on the shared frame grid: true positives are cells on in
both rolls. This is what mir_eval.multipitch computes on that grid (a half-semitone window
matches no neighbouring key) and what magenta's `calculate_frame_metrics` counts; it is exact
and vectorised here.

Empty inputs: a score whose estimate or reference is empty is 0 (mir_eval's convention,
without its warnings); average such scores only over pieces that have reference notes.
"""

import mir_eval
import numpy as np

from data.midi import MIN_PITCH
from data.midi import Notes
from data.specs import NUM_KEYS

ONSET_TOLERANCE = 0.05  # seconds
OFFSET_RATIO = 0.2  # of the reference note's duration
OFFSET_MIN_TOLERANCE = 0.05  # seconds
VELOCITY_TOLERANCE = 0.1  # on the rescaled [0, 1] velocities
NOTE_SCORES = ('note', 'note_with_offset', 'note_with_offset_velocity')


def _prf(name: str, precision: float, recall: float, f1: float) -> dict[str, float]:
  return {f'{name}_precision': float(precision), f'{name}_recall': float(recall),
          f'{name}_f1': float(f1)}


def _f1(precision: float, recall: float) -> float:
  return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.


def _mir_eval_notes(notes: Notes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(intervals [N, 2] seconds, pitches [N] Hz, velocities [N]) as mir_eval takes them."""
  intervals = np.stack([notes.onsets, notes.offsets], axis=1).astype(np.float64)
  pitches = np.asarray(mir_eval.util.midi_to_hz(np.asarray(notes.pitches, np.float64)))
  return intervals, pitches, np.asarray(notes.velocities, np.float64)


def note_scores(ref: Notes, est: Notes) -> dict[str, float]:
  """{'<score>_precision', '<score>_recall', '<score>_f1'} for each of NOTE_SCORES (module
  docstring) of the estimated notes `est` against the reference `ref` (data.midi.Notes), and
  'num_ref_notes', 'num_est_notes'. Scores are 0 where either is empty."""
  out = {'num_ref_notes': float(len(ref)), 'num_est_notes': float(len(est))}
  if not len(ref) or not len(est):
    for name in NOTE_SCORES:
      out.update(_prf(name, 0., 0., 0.))
    return out
  (ri, rp, rv), (ei, ep, ev) = _mir_eval_notes(ref), _mir_eval_notes(est)
  common = {'onset_tolerance': ONSET_TOLERANCE, 'offset_min_tolerance': OFFSET_MIN_TOLERANCE}
  p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
      ri, rp, ei, ep, offset_ratio=None, **common)
  out.update(_prf('note', p, r, f))
  p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
      ri, rp, ei, ep, offset_ratio=OFFSET_RATIO, **common)
  out.update(_prf('note_with_offset', p, r, f))
  p, r, f, _ = mir_eval.transcription_velocity.precision_recall_f1_overlap(
      ri, rp, rv, ei, ep, ev, offset_ratio=OFFSET_RATIO, velocity_tolerance=VELOCITY_TOLERANCE,
      **common)
  out.update(_prf('note_with_offset_velocity', p, r, f))
  return out


def roll(notes: Notes, num_frames: int, frame_rate: float) -> np.ndarray:
  """[num_frames, 88] bool: the frames [onset, offset) of `notes` whose times sit on a frame
  grid (frame / frame_rate, as a transcriber decodes them), rounded to their frames."""
  out = np.zeros((num_frames, NUM_KEYS), bool)
  start = np.round(notes.onsets * frame_rate).astype(int)
  end = np.round(notes.offsets * frame_rate).astype(int)
  for s, e, p in zip(start, end, notes.pitches - MIN_PITCH):
    out[s:e, p] = True
  return out


def frame_scores(ref_roll: np.ndarray, est_roll: np.ndarray,
                 frame_rate: float | None = None) -> dict[str, float]:
  """'frame_precision', 'frame_recall', 'frame_f1' of an estimated roll [F, 88] bool against
  the reference [F, 88] bool, by exact cell counting (module docstring). `frame_rate` only
  documents the grid: both rolls must share it, so their shapes must be equal."""
  ref, est = np.asarray(ref_roll, bool), np.asarray(est_roll, bool)
  if ref.shape != est.shape or ref.ndim != 2:
    raise ValueError(f'frame rolls of shapes {ref.shape} and {est.shape}'
                     f'{f" at {frame_rate} frames/s" if frame_rate else ""}: expected equal '
                     '[F, keys] on one frame grid (pad or crop the estimate to the reference)')
  tp = float(np.sum(ref & est))
  n_est, n_ref = float(est.sum()), float(ref.sum())
  precision = tp / n_est if n_est else 0.
  recall = tp / n_ref if n_ref else 0.
  return _prf('frame', precision, recall, _f1(precision, recall))
