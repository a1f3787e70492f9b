"""Onsets and Frames (models/onsets_frames.py) and its scores (data/transcription_metrics.py):
decoding and offset labels on hand-made rolls, the loss and its masks, the stopped gradient
into the onset and offset heads, and mir_eval scores against hand-computed values."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import mir_eval
import numpy as np
import pytest

from data import midi
from data import transcription_metrics as tm
from models import onsets_frames as of

B, F, MELS, K = 2, 6, 8, 88
RATE = 10.  # frames per second in the decoding tests


@pytest.fixture(scope='module')
def tiny():
  model = of.Model(num_mels=MELS, filters=(2, 2, 4), fc_size=8, lstm_units=4)
  rng = np.random.default_rng(0)
  onsets = rng.random((B, F, K)) < 0.2
  batch = {'mel': rng.normal(size=(B, F, MELS)).astype(np.float32),
           'pianoroll': (rng.random((B, F, K)) < 0.3) | onsets, 'onsets': onsets,
           'velocities': rng.integers(1, 128, (B, F, K)).astype(np.uint8)}
  variables = nn.unbox(of.init(model, jax.random.key(0), batch))
  loss = jax.jit(lambda v, b: of.loss(model, v, b, jax.random.key(1)))
  return model, variables, batch, loss


def _rolls(num_frames=10):
  return (np.zeros((num_frames, K), np.float32), np.zeros((num_frames, K), np.float32),
          np.full((num_frames, K), 0.5, np.float32))


def _notes(notes: midi.Notes) -> list[tuple]:
  return [(round(a * RATE), round(b * RATE), int(p), int(v)) for a, b, p, v in
          zip(notes.onsets, notes.offsets, notes.pitches, notes.velocities)]


# ---------------------------------------------------------------------------------------------
# The network and its loss


def test_call_shapes_and_bad_width(tiny):
  model, variables, batch, _ = tiny
  out = model.apply(variables, batch['mel'])
  assert set(out) == {'onset', 'offset', 'frame', 'velocity'}
  for v in out.values():
    assert v.shape == (B, F, K) and v.dtype == jnp.float32
  probs = of.probabilities(model, variables, batch['mel'])
  assert all(float(p.min()) >= 0 and float(p.max()) <= 1 for p in probs.values())
  with pytest.raises(ValueError, match='num_mels=8'):
    model.apply(variables, batch['mel'][..., :5])


def test_loss_is_finite_and_matches_the_bce_by_hand(tiny):
  model, variables, batch, loss = tiny
  total, metrics, state = loss(variables, batch)
  assert state == {} and np.isfinite(total) and float(metrics['weight']) == B * F
  parts = sum(float(metrics[f'{h}_loss']) for h in ('onset', 'offset', 'frame', 'velocity'))
  np.testing.assert_allclose(float(total), parts, rtol=1e-6)
  out = model.apply(variables, batch['mel'])
  x, y = np.asarray(out['onset'], np.float64), batch['onsets']
  bce = np.mean(np.logaddexp(0, x) - x * y)
  np.testing.assert_allclose(float(metrics['onset_loss']), bce, rtol=1e-5)
  want = np.sum(batch['onsets'] * (np.asarray(out['velocity']) - batch['velocities'] / 127.) ** 2)
  np.testing.assert_allclose(float(metrics['velocity_loss']), want / batch['onsets'].sum(),
                             rtol=1e-5)


def test_velocity_loss_counts_only_onset_frames(tiny):
  _, variables, batch, loss = tiny
  base = float(loss(variables, batch)[1]['velocity_loss'])
  away = dict(batch, velocities=np.where(batch['onsets'], batch['velocities'], 3).astype(np.uint8))
  assert float(loss(variables, away)[1]['velocity_loss']) == pytest.approx(base, rel=1e-6)
  at = dict(batch, velocities=np.where(batch['onsets'], 3, batch['velocities']).astype(np.uint8))
  assert float(loss(variables, at)[1]['velocity_loss']) != pytest.approx(base, rel=1e-3)
  silent = dict(batch, onsets=np.zeros_like(batch['onsets']))
  assert float(loss(variables, silent)[1]['velocity_loss']) == 0.


def test_masked_rows_do_not_count(tiny):
  _, variables, batch, loss = tiny
  masked = dict(batch, mask=np.array([True, False]))
  total, metrics, _ = loss(variables, masked)
  first = {k: v[:1] for k, v in batch.items()}
  total1, metrics1, _ = loss(variables, first)
  np.testing.assert_allclose(float(total), float(total1), rtol=1e-5)
  assert float(metrics['weight']) == F
  for name in ('onset_loss', 'offset_loss', 'frame_loss', 'velocity_loss'):
    np.testing.assert_allclose(float(metrics[name]), float(metrics1[name]), rtol=1e-5)
  noise = {'mel': batch['mel'] + 1, 'pianoroll': ~batch['pianoroll'],
           'onsets': ~batch['onsets'], 'velocities': 127 - batch['velocities']}
  changed = dict(masked, **{k: np.concatenate([batch[k][:1], v[1:]]) for k, v in noise.items()})
  np.testing.assert_allclose(float(loss(variables, changed)[0]), float(total), rtol=1e-6)


def test_frame_loss_trains_no_onset_or_offset_parameter(tiny):
  model, variables, batch, _ = tiny
  grads = jax.grad(lambda v: of.loss(model, v, batch)[1]['frame_loss'])(variables)['params']
  for name, tree in grads.items():
    size = sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(tree))
    if name.startswith(('onset_', 'offset_', 'velocity_')):
      assert size == 0., name
    else:
      assert size > 0., name
  # The onset loss does train the onset head (the stop is only on the frame head's path).
  onset = jax.grad(lambda v: of.loss(model, v, batch)[1]['onset_loss'])(variables)['params']
  assert float(jnp.sum(jnp.abs(onset['onset_stack']['fc']['kernel']))) > 0


# ---------------------------------------------------------------------------------------------
# Offset labels


def test_offsets_of_a_hand_made_roll():
  roll = np.zeros((1, 6, K), bool)
  onsets = np.zeros((1, 6, K), bool)
  roll[0, 1:4, 0] = onsets[0, 1, 0] = True  # one note: frames 1..3
  roll[0, :, 1] = onsets[0, 0, 1] = onsets[0, 3, 1] = True  # re-struck at 3, past the crop
  roll[0, 4:, 2] = onsets[0, 4, 2] = True  # sounds in the last frame: not an offset
  roll[0, 2, 3] = True  # a sounding frame without an onset in the crop
  want = np.zeros((1, 6, K), bool)
  want[0, 3, 0] = want[0, 2, 1] = want[0, 2, 3] = True
  got = np.asarray(of.offsets_of(roll, onsets))
  assert got.dtype == bool and got.shape == roll.shape
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(np.asarray(of.offsets_of(roll[0], onsets[0])), want[0])


# ---------------------------------------------------------------------------------------------
# Decoding


def test_decode_a_single_note():
  onset, frame, vel = _rolls()
  onset[2, 40], frame[2:6, 40], vel[2, 40], vel[3, 40] = 0.9, 0.9, 0.5, 0.9
  notes = of.decode(onset, frame, vel, RATE)
  assert _notes(notes) == [(2, 6, 61, 64)]  # round(127 * 0.5) = 64, read at the onset frame
  np.testing.assert_allclose(notes.onsets, [0.2])
  np.testing.assert_allclose(notes.offsets, [0.6])


def test_decode_a_re_onset_ends_the_note_and_starts_another():
  onset, frame, vel = _rolls()
  onset[1, 5] = onset[5, 5] = 0.8
  frame[1:9, 5] = 0.8
  vel[1, 5], vel[5, 5] = 0.25, 1.0
  assert _notes(of.decode(onset, frame, vel, RATE)) == [(1, 5, 26, 32), (5, 9, 26, 127)]


def test_decode_a_held_onset_is_one_note():
  onset, frame, vel = _rolls()
  onset[2:5, 7] = 0.9  # no frame activity: the onset alone keeps the note on
  onset[2:5, 8], frame[2:8, 8] = 0.9, 0.9
  assert _notes(of.decode(onset, frame, vel, RATE)) == [(2, 5, 28, 64), (2, 8, 29, 64)]


def test_decode_thresholds_and_frames_without_onsets():
  onset, frame, vel = _rolls()
  onset[1, 3], frame[1:4, 3], frame[4:6, 3] = 0.6, 0.6, 0.4
  frame[2:9, 4] = 0.9  # frames without an onset start nothing
  assert _notes(of.decode(onset, frame, vel, RATE)) == [(1, 4, 24, 64)]
  assert _notes(of.decode(onset, frame, vel, RATE, frame_threshold=0.3)) == [(1, 6, 24, 64)]
  assert _notes(of.decode(onset, frame, vel, RATE, onset_threshold=0.7)) == []
  assert _notes(of.decode(onset, frame, vel, RATE, frame_threshold=0.7)) == [(1, 2, 24, 64)]


def test_decode_velocity_clipping_note_at_the_end_and_offsets():
  onset, frame, vel = _rolls()
  onset[7, 87], frame[7:, 87], vel[7, 87] = 1., 1., 0.  # runs past the end; velocity 0 -> 1
  onset[0, 0], frame[:5, 0] = 1., 1.
  offset = np.zeros_like(onset)
  offset[2, 0] = 0.9
  assert _notes(of.decode(onset, frame, vel, RATE)) == [(0, 5, 21, 64), (7, 10, 108, 1)]
  got = of.decode(onset, frame, vel, RATE, offset_probs=offset)
  assert _notes(got) == [(0, 3, 21, 64), (7, 10, 108, 1)]


def test_decode_an_empty_roll():
  notes = of.decode(*_rolls(), RATE)
  assert len(notes) == 0 and notes.pitches.dtype == np.int32 and notes.onsets.dtype == np.float64
  assert len(of.decode(*_rolls(0), RATE)) == 0


def test_decode_of_label_rolls_recovers_the_notes():
  sr, hop = 16000, 512
  notes = midi.make_notes([0.1, 0.5, 0.5, 1.3], [0.5, 1.2, 0.8, 2.0], [60, 60, 72, 21],
                          [40, 90, 127, 1])
  feats = midi.frame_features(notes, 70, hop, sr)
  est = of.decode(feats['onsets'], feats['pianoroll'], feats['velocities'] / 127., sr / hop)
  np.testing.assert_array_equal(est.velocities, notes.velocities)
  scores = tm.note_scores(notes, est)
  assert scores['note_f1'] == scores['note_with_offset_f1'] == 1.
  assert scores['note_with_offset_velocity_f1'] == 1.


# ---------------------------------------------------------------------------------------------
# Scores


def _ref():
  return midi.make_notes([0.0, 1.0, 2.0, 2.0], [0.5, 2.0, 3.0, 2.5], [60, 62, 64, 67],
                         [30, 60, 90, 120])


def test_note_scores_of_a_perfect_transcription():
  ref = _ref()
  scores = tm.note_scores(ref, ref)
  for name in tm.NOTE_SCORES:
    for part in ('precision', 'recall', 'f1'):
      assert scores[f'{name}_{part}'] == 1., name
  # Velocities are compared after mir_eval's rescaling: an affine map of the truth is exact.
  scaled = midi.make_notes(ref.onsets, ref.offsets, ref.pitches, ref.velocities // 3 + 10)
  assert tm.note_scores(ref, scaled)['note_with_offset_velocity_f1'] == 1.


def test_note_scores_onset_and_offset_tolerances():
  ref = _ref()
  onsets = ref.onsets.copy()
  onsets[0] += 0.06  # beyond 50 ms: a miss and a false alarm
  onsets[1] += 0.04  # within 50 ms
  shifted = midi.make_notes(onsets, ref.offsets, ref.pitches, ref.velocities)
  scores = tm.note_scores(ref, shifted)
  assert scores['note_precision'] == scores['note_recall'] == 0.75
  assert scores['note_f1'] == pytest.approx(0.75)
  offsets = ref.offsets.copy()
  offsets[1] += 0.25  # ref duration 1 s: tolerance 0.2 s
  offsets[0] += 0.04  # ref duration 0.5 s: tolerance max(0.1, 0.05) s
  late = midi.make_notes(ref.onsets, offsets, ref.pitches, ref.velocities)
  scores = tm.note_scores(ref, late)
  assert scores['note_f1'] == 1.
  assert scores['note_with_offset_precision'] == scores['note_with_offset_recall'] == 0.75
  missing = midi.make_notes(ref.onsets[:2], ref.offsets[:2], ref.pitches[:2], ref.velocities[:2])
  scores = tm.note_scores(ref, missing)
  assert (scores['note_precision'], scores['note_recall']) == (1., 0.5)
  assert scores['note_f1'] == pytest.approx(2 / 3)


def test_note_scores_of_empty_notes():
  empty = midi.make_notes([], [], [], [])
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    for ref, est in ((empty, _ref()), (_ref(), empty), (empty, empty)):
      scores = tm.note_scores(ref, est)
      assert all(scores[f'{n}_f1'] == 0. for n in tm.NOTE_SCORES)
      assert scores['num_ref_notes'] == len(ref) and scores['num_est_notes'] == len(est)


def test_frame_scores_by_hand_and_against_mir_eval():
  ref = np.zeros((4, K), bool)
  est = np.zeros((4, K), bool)
  ref[0:2, 10] = ref[1:3, 11] = True  # 4 cells
  est[0:2, 10] = est[3, 11] = True  # 3 cells, 2 right
  scores = tm.frame_scores(ref, est, RATE)
  assert scores['frame_precision'] == pytest.approx(2 / 3)
  assert scores['frame_recall'] == 0.5
  assert scores['frame_f1'] == pytest.approx(4 / 7)
  assert tm.frame_scores(ref, ref, RATE)['frame_f1'] == 1.
  assert tm.frame_scores(ref, np.zeros_like(ref), RATE)['frame_f1'] == 0.
  with pytest.raises(ValueError, match='expected equal'):
    tm.frame_scores(ref, est[:3], RATE)
  # Exact counting is mir_eval.multipitch on the shared grid.
  rng = np.random.default_rng(1)
  ref, est = rng.random((50, K)) < 0.1, rng.random((50, K)) < 0.1
  hz = lambda roll: [mir_eval.util.midi_to_hz(np.flatnonzero(r) + 21.) for r in roll]
  times = np.arange(50) / RATE
  m = mir_eval.multipitch.metrics(times, hz(ref), times, hz(est))
  scores = tm.frame_scores(ref, est, RATE)
  np.testing.assert_allclose([scores['frame_precision'], scores['frame_recall']], m[:2])


def test_paper_defaults():
  m = of.Model()
  assert (m.num_mels, m.filters, m.pools, m.fc_size, m.lstm_units, m.num_keys) == (
      229, (48, 48, 96), (1, 2, 2), 768, 256, 88)
  with pytest.raises(ValueError, match='one pool per conv'):
    of.Model(filters=(4, 4), pools=(1, 2, 2))
