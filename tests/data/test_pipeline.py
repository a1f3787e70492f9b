"""The grain input pipeline: determinism, sharding, crops, global arrays and restore."""

import jax
import librosa
import numpy as np
import orbax.checkpoint as ocp
import grain
import pytest

from data import audio
from data import pipeline
from data import specs
from tests.conftest import TEST_CONFIG


@pytest.fixture
def config(built, maestro_dir):
  c = specs.input_config()
  c.dataset = TEST_CONFIG.name
  c.manual_dir = maestro_dir
  c.data_dir = str(built.data_dir_root)
  c.batch_size = 4
  c.crop_samples = 4000
  return c


def _take(batches, n):
  return [next(batches) for _ in range(n)]


def _equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]))


def test_same_seed_same_batches(config):
  first = _take(pipeline.make_batches(config), 6)
  _equal(first, _take(pipeline.make_batches(config), 6))
  config.seed = 1
  other = _take(pipeline.make_batches(config), 6)
  assert any(not np.array_equal(a['audio'], b['audio']) for a, b in zip(first, other))


MIDI_FEATURES = ('pianoroll', 'onsets', 'velocities')


def test_crops_are_the_source_segments(config, built):
  config.frame_features = MIDI_FEATURES
  source = built.as_data_source()['train']
  hop = TEST_CONFIG.hop_length
  for batch in _take(pipeline.make_batches(config), 3):
    assert batch['audio'].shape == (4, 4000) and batch['audio'].dtype == np.int32
    assert batch['pianoroll'].shape == (4, 4000 // hop, 88)
    for i, idx in enumerate(batch['index']):
      ex = source[int(idx)]
      offset = int(batch['start_sample'][i] - ex['start_sample'])
      assert offset % hop == 0 and 0 <= offset <= TEST_CONFIG.segment_samples - 4000
      want = audio.mu_law_encode(audio.from_int16(ex['audio'][offset:offset + 4000]))
      np.testing.assert_array_equal(batch['audio'][i], want)
      for k in MIDI_FEATURES:
        np.testing.assert_array_equal(batch[k][i], ex[k][offset // hop:offset // hop + 8])


def _log_mel(wave, config):
  """The reference: librosa's mel spectrogram of `wave`, log with the config's floor, [F, M]."""
  m, hop = config.mel, TEST_CONFIG.hop_length
  mel = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=m.n_fft, hop_length=hop,
                                       n_mels=m.n_mels, power=m.power)
  return np.log(np.maximum(mel, m.floor)).T


def test_mel_frames_are_those_of_the_segment_around_the_crop(config, built):
  """Frame f of a crop is librosa's frame centred on its sample f hop, read from the segment
  (zeros beyond its ends); frames whose window lies inside the crop need no context."""
  config.update(frame_features=('mel', 'onsets'), encoding='float', crop_samples=4000)
  source = built.as_data_source()['train']
  hop, n_fft = TEST_CONFIG.hop_length, config.mel.n_fft
  inner = slice(-(-n_fft // 2 // hop), 4000 // hop - n_fft // 2 // hop)  # windows inside
  batch = next(pipeline.make_batches(config))
  assert batch['mel'].shape == (4, 8, 80) and batch['mel'].dtype == np.float32
  assert 'pcm' not in batch
  for i, idx in enumerate(batch['index']):
    ex = source[int(idx)]
    offset = int(batch['start_sample'][i] - ex['start_sample'])
    segment = audio.from_int16(ex['audio'])
    want = _log_mel(segment, config)[offset // hop:offset // hop + 8]
    np.testing.assert_allclose(batch['mel'][i], want, atol=2e-3)
    crop_only = _log_mel(batch['audio'][i], config)[inner]
    np.testing.assert_allclose(batch['mel'][i][inner], crop_only, atol=2e-3)


def test_mel_is_computed_on_the_batch_devices(config):
  config.update(frame_features=('mel',), batch_size=8, crop_samples=2000)
  mesh = jax.make_mesh((8,), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  batch = next(pipeline.make_batches(config, sharding))
  assert batch['mel'].shape == (8, 4, 80) and batch['mel'].sharding == sharding
  host = next(pipeline.make_batches(config))
  np.testing.assert_allclose(np.asarray(batch['mel']), host['mel'], atol=1e-5)


def test_float_and_linear_encodings(config):
  config.encoding = 'float'
  x = next(pipeline.make_batches(config))['audio']
  assert x.dtype == np.float32 and np.abs(x).max() <= 1.0
  config.encoding, config.bits = 'linear', 10
  codes = next(pipeline.make_batches(config))['audio']
  assert codes.min() >= 0 and codes.max() <= 1023
  np.testing.assert_allclose(audio.linear_decode(codes, 10), x, atol=1 / 1023)


def test_processes_get_disjoint_examples(config, built):
  config.num_epochs, config.batch_size = 1, 1
  n = len(built.as_data_source()['train'])
  seen = []
  for shard in range(2):
    b = pipeline.make_batches(config, shard_index=shard, shard_count=2)
    seen.append([int(x['index'][0]) for x in b])
  assert not set(seen[0]) & set(seen[1])
  assert len(seen[0]) == len(seen[1]) == n // 2
  assert len(set(seen[0])) == len(seen[0])


def test_global_arrays_on_a_mesh(config):
  mesh = jax.make_mesh((4, 2), ('data', 'model'),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  config.batch_size = 8
  host = next(pipeline.make_batches(config))
  batch = next(pipeline.make_batches(config, sharding))
  assert isinstance(batch['audio'], jax.Array) and batch['audio'].sharding == sharding
  assert len(batch['audio'].addressable_shards) == 8
  assert batch['audio'].addressable_shards[0].data.shape == (2, 4000)
  np.testing.assert_array_equal(np.asarray(batch['audio']), host['audio'])
  config.batch_size = 6
  with pytest.raises(ValueError, match=r'input.batch_size=6 is not divisible by the 4 devices'):
    pipeline.make_batches(config, sharding)


@pytest.mark.parametrize('workers', [0, 2])
def test_restored_iterator_continues_identically(config, tmp_path, workers):
  config.worker_count = workers
  reference = _take(pipeline.make_batches(config), 7)
  batches = pipeline.make_batches(config)
  _equal(_take(batches, 3), reference[:3])
  with ocp.CheckpointManager(tmp_path / 'ckpt') as mngr:
    mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(batches)))
    mngr.wait_until_finished()
  _take(batches, 2)  # moves on; the checkpoint must not
  with ocp.CheckpointManager(tmp_path / 'ckpt') as mngr:
    fresh = pipeline.make_batches(config)
    mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  _equal(_take(fresh, 4), reference[3:])


def test_eval_mode_pads_the_last_batch(config, built):
  config.shuffle, config.num_epochs, config.drop_remainder = False, 1, False
  config.crop_samples, config.batch_size = None, 3
  n = len(built.as_data_source()['test'])
  config.split = 'test'
  batches = list(pipeline.make_batches(config))
  assert len(batches) == -(-n // 3)
  assert sum(int(b['mask'].sum()) for b in batches) == n
  assert sorted(int(i) for b in batches for i, m in zip(b['index'], b['mask']) if m) == list(
      range(n))
  assert batches[-1]['audio'].shape == (3, TEST_CONFIG.segment_samples)


@pytest.mark.parametrize('key, value, match', [
    ('encoding', 'alaw', 'input.encoding'),
    ('crop_samples', 10**6, 'input.crop_samples'),
    ('split', 'dev', 'input.split'),
    ('frame_features', ('pianoroll', 'sustain'), 'input.frame_features'),
    ('mel.fmax', 9000., 'input.mel'),
    ('mel.win_length', 4096, 'input.mel.win_length'),
])
def test_bad_input_config(config, key, value, match):
  if key.startswith('mel.'):
    config.frame_features = ('mel',)
  config.update_from_flattened_dict({key: value})
  with pytest.raises(ValueError, match=match) as e:
    pipeline.make_batches(config)
  assert '\n' not in str(e.value)


def test_crop_must_be_frame_aligned_with_frame_features(config):
  config.frame_features, config.crop_samples = ('onsets',), 4001
  with pytest.raises(ValueError, match='multiple of the hop length 500'):
    pipeline.make_batches(config)


def test_locked_config_rejects_unknown_keys():
  c = specs.input_config()
  c.lock()
  with pytest.raises(AttributeError, match='batchsize'):
    c.batchsize = 3
