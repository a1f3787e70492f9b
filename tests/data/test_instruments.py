"""The multi-instrument dataset (data/instruments.py) and its batches."""

import csv
import os
import shutil

import ml_collections
import numpy as np
import pytest

from data import instruments
from data import maestro
from data import pipeline
from data import specs
from tests.conftest import TEST_CONFIG


def _paired(maestro_dir: str, out: str, edit=None) -> str:
  """A copy of the piano fixture whose every piece is listed twice, as 'piano' and as 'organ'
  (the organ file a copy of the piano's, negated), with `edit(rows)` applied to the CSV rows."""
  shutil.copytree(maestro_dir, out)
  with open(maestro.find_csv(out), newline='') as f:
    rows = list(csv.DictReader(f))
  paired = []
  for row in rows:
    paired.append({**row, 'instrument': 'piano'})
    organ = row['audio_filename'].replace('.wav', '.organ.wav')
    x, sr = __import__('soundfile').read(os.path.join(out, row['audio_filename']), dtype='int16')
    __import__('soundfile').write(os.path.join(out, organ), -np.maximum(x, -32767), sr,
                                  subtype='PCM_16')
    paired.append({**row, 'audio_filename': organ, 'instrument': 'organ'})
  if edit:
    edit(paired)
  with open(maestro.find_csv(out), 'w', newline='') as f:
    writer = csv.DictWriter(f, list(paired[0]))
    writer.writeheader()
    writer.writerows(paired)
  return out


@pytest.fixture(scope='module')
def paired(maestro_dir, tmp_path_factory):
  d = _paired(maestro_dir, str(tmp_path_factory.mktemp('paired') / 'm'))
  return d, instruments.prepare(TEST_CONFIG, manual_dir=d,
                                data_dir=str(tmp_path_factory.mktemp('tfds')))


def test_every_rendering_is_a_segment_with_its_instrument(paired, built):
  _, builder = paired
  for split in maestro.SPLITS:
    ours = list(builder.as_data_source()[split])
    piano = {(ex['audio_filename'].decode(), int(ex['start_sample'])): ex
             for ex in built.as_data_source()[split]}
    assert len(ours) == 2 * len(piano)
    for ex in ours:
      name = ex['audio_filename'].decode()
      key = (name.replace('.organ.wav', '.wav'), int(ex['start_sample']))
      assert specs.INSTRUMENTS[int(ex['instrument'])] == ('organ' if '.organ.' in name
                                                         else 'piano')
      # The same notes and segment grid in both renderings; the organ's audio is the piano's
      # negated (to within the int16 rounding of resampling).
      np.testing.assert_array_equal(ex['pianoroll'], piano[key]['pianoroll'])
      sign = -1 if '.organ.' in name else 1
      np.testing.assert_allclose(ex['audio'].astype(int), sign * piano[key]['audio'], atol=1)


def test_batches_carry_the_instrument(paired):
  d, builder = paired
  c = specs.input_config()
  c.update(dataset=TEST_CONFIG.name, manual_dir=d, data_dir=os.path.dirname(os.path.dirname(
      os.path.dirname(builder.data_dir))), instruments=True, batch_size=4, crop_samples=4000,
           frame_features=('pianoroll',))
  batch = next(pipeline.make_batches(c))
  spec = specs.batch_spec(c)
  assert set(batch) == set(spec) | {'index', 'start_sample'}
  for k, (shape, dtype) in spec.items():
    assert batch[k].shape == shape and batch[k].dtype == dtype, k
  assert set(np.asarray(batch['instrument']).tolist()) <= {0, 1}


def _fails(d, tmp_path, words):
  with pytest.raises(maestro.BadFileError) as e:
    instruments.prepare(TEST_CONFIG, manual_dir=d, data_dir=str(tmp_path / 'tfds'))
  assert '\n' not in str(e.value)
  for w in words:
    assert w in str(e.value)


def test_a_csv_without_instruments_is_one_line(maestro_dir, tmp_path):
  _fails(maestro_dir, tmp_path, ['maestro-v3.0.0.csv', 'no `instrument` column'])


def test_a_score_in_two_splits_is_one_line(maestro_dir, tmp_path):
  def move(rows):
    rows[1]['split'] = 'test' if rows[0]['split'] != 'test' else 'train'
  d = _paired(maestro_dir, str(tmp_path / 'm'), move)
  _fails(d, tmp_path, ['must be in one split'])


def test_an_unknown_instrument_is_one_line(maestro_dir, tmp_path):
  def rename(rows):
    rows[1]['instrument'] = 'theremin'
  d = _paired(maestro_dir, str(tmp_path / 'm'), rename)
  _fails(d, tmp_path, ["'theremin'", 'piano, organ'])
