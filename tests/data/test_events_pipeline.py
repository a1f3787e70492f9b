"""The events pipeline (data/events_pipeline.py): windows of a piece's (augmented) events, masks
past a short piece's end, seeded batches independent of the process count, and exact resume."""

import jax
import numpy as np
import pytest

from data import events_pipeline
from data import inputs
from data import maestro_midi
from data import midi_events
from data import specs


@pytest.fixture(scope='module')
def config(maestro_dir, tmp_path_factory):
  c = specs.events_input_config()
  c.update(manual_dir=maestro_dir, data_dir=str(tmp_path_factory.mktemp('tfds_events')),
           batch_size=4, window=32)
  return c


def _events_of_piece(config, index):
  source = events_pipeline.load_source(config)
  return midi_events.encode(maestro_midi.notes_of(source[index]))


def test_windows_are_slices_of_the_pieces_events(config):
  c = config.copy_and_resolve_references()
  c.augment = False
  batch = next(events_pipeline.make_batches(c))
  assert batch['events'].shape == (4, 32) and batch['events'].dtype == np.int32
  for row in range(4):
    events = _events_of_piece(c, int(batch['index'][row]))
    start, n = int(batch['start'][row]), int(batch['event_mask'][row].sum())
    assert n == 32 and start + 32 <= len(events)
    np.testing.assert_array_equal(batch['events'][row], events[start:start + n])
  assert batch['start'].max() > 0  # windows start anywhere in a piece


def test_a_piece_shorter_than_the_window_is_masked_past_its_end(config):
  c = config.copy_and_resolve_references()
  c.update(augment=False, window=100_000, batch_size=2)
  batch = next(events_pipeline.make_batches(c))
  for row in range(2):
    n = len(_events_of_piece(c, int(batch['index'][row])))
    assert batch['start'][row] == 0
    np.testing.assert_array_equal(batch['event_mask'][row], np.arange(100_000) < n)
    assert not batch['events'][row, n:].any()


def test_augmentation_changes_the_events_and_keeps_them_in_the_vocabulary(config):
  plain = config.copy_and_resolve_references()
  plain.augment = False
  a = [next(events_pipeline.make_batches(config)) for _ in range(2)]
  b = next(events_pipeline.make_batches(plain))
  assert not np.array_equal(a[0]['events'], b['events'])
  assert a[0]['events'].max() < midi_events.VOCAB_SIZE
  np.testing.assert_array_equal(a[0]['events'], a[1]['events'])  # seeded


def test_two_processes_read_the_global_batches_one_reads_and_resume_exactly(config):
  one = events_pipeline.make_batches(config, shard_index=0, shard_count=1)
  c2 = config.copy_and_resolve_references()
  c2.batch_size = 2  # each of 2 processes' share of the global batch of 4
  halves = [events_pipeline.make_batches(c2, None, i, 2) for i in range(2)]
  for _ in range(3):
    whole = next(one)
    parts = [next(h) for h in halves]
    np.testing.assert_array_equal(whole['events'], np.concatenate([p['events'] for p in parts]))
  state = one.get_state()
  expected = [next(one)['events'] for _ in range(2)]
  again = events_pipeline.make_batches(config)
  again.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(again)['events'], e)
  with pytest.raises(ValueError, match='input.window=0: expected a positive number'):
    bad = config.copy_and_resolve_references()
    bad.window = 0
    events_pipeline.make_batches(bad)


def test_evaluation_windows_cover_every_piece_once_in_order(config):
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  source = events_pipeline.load_source(config.copy_and_resolve_references())
  split = config.split
  batches = list(inputs.eval_batches(config, split, 3, None, sh))
  rows = [(np.asarray(b['events'][r]), np.asarray(b['event_mask'][r]))
          for b in batches for r in range(3) if b['mask'][r]]
  got = np.concatenate([e[m] for e, m in rows])
  pieces = [_events_of_piece(config, i) for i in range(len(source))]
  np.testing.assert_array_equal(got, np.concatenate(pieces))  # unaugmented, in order
  assert len(rows) == sum(-(-len(p) // 32) for p in pieces)
  assert not batches[-1]['mask'][len(rows) % 3 or 3:].any()
  counts = np.bincount(got, minlength=midi_events.VOCAB_SIZE)
  p = counts[counts > 0] / counts.sum()
  assert events_pipeline.marginal_entropy_bits(config, split) == pytest.approx(
      -(p * np.log2(p)).sum())
  with pytest.raises(ValueError, match='crop_samples=8: an events input is cut into windows'):
    next(inputs.eval_batches(config, split, 3, 8, sh))
