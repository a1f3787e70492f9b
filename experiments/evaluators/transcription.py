"""Transcription scores of a transcriber (models/__init__.py, kind 'transcriber') over a split.

    config.evals.transcription = dict(type='transcription', every_steps=1000,
                                      split='validation', batch_size=8, batches=None,
                                      crop_samples=None, onset_threshold=0.5,
                                      frame_threshold=0.5)

Every segment of `split` once, in order (or its first `batches` batches; `crop_samples`: the
first that many samples of each). The model's notes (its `transcribe` of the segment's 'mel'
frames) are scored against the notes of the segment's frame labels, decoded by the same rule
(the family's `label_notes`): MAESTRO's MIDI on the dataset's frame grid, so the reference's
onsets and offsets sit on the same frames as the estimate's (32 ms at 16 kHz with hop 512) and
a note cut by a segment's edge is cut alike in both. data/transcription_metrics.py scores them:

    frame_{precision,recall,f1}   (frame, key) cells of the estimate's notes against the
                                  pianoroll labels, counted over the whole split
    note_*, note_with_offset_*, note_with_offset_velocity_*
                                  mir_eval's note scores per segment, averaged over the
                                  segments that hold reference notes (the paper averages over
                                  pieces)
    segments, ref_notes, est_notes  what was scored

Process 0 reads the split for itself and transcribes; every process takes part in gathering
the parameters.
"""

import jax
import ml_collections
import numpy as np

from data import pipeline
from data import transcription_metrics
from experiments import sharding
from experiments import state as state_lib


class Evaluator:
  """mir_eval frame and note scores of a transcriber on a split."""

  def __init__(self, context, split: str = 'validation', batch_size: int = 8,
               batches: int | None = None, crop_samples: int | None = None,
               onset_threshold: float = 0.5, frame_threshold: float = 0.5):
    if not hasattr(context.family, 'transcribe'):
      raise ValueError(f'config.evals: the transcription evaluator scores transcribers; '
                       f'{context.config.model_name} has no `transcribe`')
    self.context, self.split, self.batch_size = context, split, batch_size
    self.batches, self.crop_samples = batches, crop_samples
    self.thresholds = (onset_threshold, frame_threshold)

  def _segments(self):
    """Host batches of the split's segments, in order, with 'mask' on padding rows."""
    c = ml_collections.ConfigDict(self.context.config.input.to_dict())
    c.update(split=self.split, batch_size=self.batch_size, crop_samples=self.crop_samples,
             shuffle=False, num_epochs=1, drop_remainder=False, worker_count=0)
    for i, batch in enumerate(pipeline.make_batches(c, shard_index=0, shard_count=1)):
      if self.batches is not None and i >= self.batches:
        return
      yield batch

  def run(self, state: dict) -> dict:
    c = self.context
    variables = sharding.to_host(state_lib.variables(state))  # a collective: every process joins
    if jax.process_index() != 0:
      return {}
    family, model = c.family, c.model
    refs, ests, notes = [], [], []
    for batch in self._segments():
      rows = np.flatnonzero(batch['mask'])
      mel = np.asarray(batch['mel'])[rows]
      for i, est in zip(rows, family.transcribe(model, variables, mel, *self.thresholds)):
        roll = np.asarray(batch['pianoroll'][i], bool)
        ref = family.label_notes(model, roll, batch['onsets'][i], batch['velocities'][i])
        refs.append(roll)
        ests.append(transcription_metrics.roll(est, len(roll), model.frame_rate))
        notes.append(transcription_metrics.note_scores(ref, est))
    if not refs:
      raise ValueError(f'split {self.split!r} holds no segment to transcribe')
    out = transcription_metrics.frame_scores(np.concatenate(refs), np.concatenate(ests))
    scored = [n for n in notes if n['num_ref_notes']]
    for key in scored[0] if scored else ():
      if not key.startswith('num_'):
        out[key] = float(np.mean([n[key] for n in scored]))
    out.update(segments=len(refs), ref_notes=sum(n['num_ref_notes'] for n in notes),
               est_notes=sum(n['num_est_notes'] for n in notes))
    return out
