"""The Maestro TFDS builder on MAESTRO-format fixtures, with good and bad input."""

import csv
import pickle
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from data import audio
from data import maestro
from data import midi
from tests.conftest import bad_midi
from tests.conftest import missing_midi
from tests.conftest import ROOT
from tests.conftest import TEST_CONFIG


def _rows(manual_dir):
  with open(maestro.find_csv(manual_dir), newline='') as f:
    return list(csv.DictReader(f))


def _resampled(manual_dir, row, rate):
  x, sr = audio.read_audio(os.path.join(manual_dir, row['audio_filename']))
  return audio.resample(x, sr, rate), sr


def _by_key(source):
  return {(ex['audio_filename'].decode(), int(ex['start_sample'])): ex for ex in source}


def test_counts_rates_and_segments(built, maestro_dir):
  rows = _rows(maestro_dir)
  assert {r['split'] for r in rows} == {'train', 'validation', 'test'}
  assert {sf.info(os.path.join(maestro_dir, r['audio_filename'])).samplerate
          for r in rows} == {44100, 48000}
  assert built.info.metadata['sample_rate'] == 16000
  sources = built.as_data_source()
  s = TEST_CONFIG.segment_samples
  for split in ('train', 'validation', 'test'):
    examples = _by_key(sources[split])
    expected = {}
    for r in (r for r in rows if r['split'] == split):
      full, _ = _resampled(maestro_dir, r, 16000)
      expected.update({(r['audio_filename'], k * s): full[k * s:(k + 1) * s]
                       for k in range(len(full) // s)})
    assert sorted(examples) == sorted(expected) and expected
    for key, ex in examples.items():
      assert ex['audio'].shape == (s,) and ex['audio'].dtype == np.int16
      # Equal to the resampled source at start_sample, up to int16 rounding.
      np.testing.assert_allclose(audio.from_int16(ex['audio']), expected[key], atol=1 / 32768)


def test_segments_match_an_independent_resampler(built, maestro_dir):
  row = _rows(maestro_dir)[1]  # a 48 kHz piece
  x, sr = audio.read_audio(os.path.join(maestro_dir, row['audio_filename']))
  assert sr == 48000
  reference = scipy.signal.resample_poly(x, 1, 3)
  ex = next(e for e in built.as_data_source()['validation'] if int(e['start_sample']) == 16000)
  got = audio.from_int16(ex['audio'])[100:-100]
  want = reference[16100:31900]
  assert np.max(np.abs(got - want)) < 2e-3
  assert ex['canonical_composer'].decode() == row['canonical_composer']
  assert ex['midi_filename'].decode() == row['midi_filename']
  assert ex['year'] == int(row['year'])
  assert ex['duration'] == pytest.approx(float(row['duration']))


def test_onsets_sit_at_the_rendered_note_onsets(built, maestro_dir):
  hop, f = TEST_CONFIG.hop_length, TEST_CONFIG.num_frames
  row = [r for r in _rows(maestro_dir) if r['split'] == 'train'][0]
  notes = midi.load_notes(os.path.join(maestro_dir, row['midi_filename']))
  examples = sorted((e for e in built.as_data_source()['train']
                     if e['audio_filename'].decode() == row['audio_filename']),
                    key=lambda e: e['start_sample'])
  onsets = np.concatenate([e['onsets'] for e in examples])  # [frames, 88]
  roll = np.concatenate([e['pianoroll'] for e in examples])
  wave = np.concatenate([audio.from_int16(e['audio']) for e in examples])
  # Every MIDI onset is marked in its frame, and sounds in the pianoroll there.
  frames = np.floor(notes.onsets * 16000 / hop).astype(int)
  inside = frames < len(onsets)
  assert inside.sum() > 10
  assert onsets[frames[inside], notes.pitches[inside] - 21].all()
  assert roll[frames[inside], notes.pitches[inside] - 21].all()
  assert onsets.sum() == len(set(zip(frames[inside], notes.pitches[inside])))
  # The audio's energy rises at the marked onsets: compare the frame after each onset frame
  # with the one before it.
  energy = np.square(wave).reshape(-1, hop).sum(axis=1)
  on = np.unique(np.nonzero(onsets.any(axis=1))[0])
  on = on[(on >= 1) & (on + 1 < len(energy))]
  rise = energy[on + 1] / np.maximum(energy[on - 1], 1e-9)
  assert np.median(rise) > 1.5
  assert len(examples) * f == len(onsets)


def test_workers_give_the_same_dataset(built, maestro_dir, tmp_path):
  parallel = maestro.prepare(TEST_CONFIG, manual_dir=maestro_dir, data_dir=str(tmp_path),
                             num_workers=2)
  for split in ('train', 'test'):
    a, b = _by_key(built.as_data_source()[split]), _by_key(parallel.as_data_source()[split])
    assert a.keys() == b.keys()
    for k in a:
      for name in ('audio', 'pianoroll', 'velocities'):
        np.testing.assert_array_equal(a[k][name], b[k][name])


def test_builder_configs():
  assert (maestro.get_config('16k').sample_rate, maestro.get_config('24k').sample_rate) == (
      16000, 24000)
  for name in ('16k', '24k'):
    c = maestro.get_config(name)
    assert c.segment_samples % c.hop_length == 0
    assert c.sample_rate / c.hop_length == 31.25
  parsed = maestro.get_config('sr16000_seg16000_hop500')
  assert (parsed.name, parsed.sample_rate, parsed.segment_samples, parsed.hop_length) == (
      TEST_CONFIG.name, 16000, 16000, 500)
  with pytest.raises(ValueError, match="'8k'"):
    maestro.get_config('8k')
  with pytest.raises(ValueError, match='hop_length'):
    maestro.MaestroConfig.make(16000, 1000, 300)


def test_embedded_corpus_is_built_once_in_the_cache(maestro_dir, tmp_path, monkeypatch):
  monkeypatch.setenv('WAVEGEN_CACHE', str(tmp_path))
  manual_dir, data_dir = maestro.embedded_dirs()
  assert manual_dir.startswith(str(tmp_path))
  shutil.copytree(maestro_dir, manual_dir)  # stands in for the generated corpus
  first = maestro.prepare(TEST_CONFIG)
  assert first.data_dir.startswith(data_dir) and first.is_prepared()
  stamp = os.path.getmtime(os.path.join(first.data_dir, 'dataset_info.json'))
  again = maestro.prepare(TEST_CONFIG)
  assert os.path.getmtime(os.path.join(again.data_dir, 'dataset_info.json')) == stamp
  assert 'train' in maestro.describe(again)


# ---------------------------------------------------------------------------------------------
# Bad input: each fault under both policies.


def _first_train(rows):
  return next(r for r in rows if r['split'] == 'train')


def _write_rows(manual_dir, rows, fields=maestro.CSV_COLUMNS):
  with open(maestro.find_csv(manual_dir), 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(fields), extrasaction='ignore')
    w.writeheader()
    w.writerows(rows)


def _set_in_csv(d, key, value):
  rows = _rows(d)
  _first_train(rows)[key] = value
  _write_rows(d, rows)


def _wav_bytes(path):
  with open(path, 'rb') as f:
    return f.read()


def corrupt_wav(d, row):
  p = os.path.join(d, row['audio_filename'])
  data = _wav_bytes(p)
  with open(p, 'wb') as f:
    f.write(b'RIFF\x00\x00\x00\x00WAVEjunk' + data[20:4000])
  return row['audio_filename'], 'does not decode'


def truncated_wav(d, row):
  p = os.path.join(d, row['audio_filename'])
  data = _wav_bytes(p)
  with open(p, 'wb') as f:
    f.write(data[:len(data) * 2 // 3])
  return row['audio_filename'], 'truncated'


def empty_wav(d, row):
  open(os.path.join(d, row['audio_filename']), 'wb').close()
  return row['audio_filename'], 'empty'


def missing_wav(d, row):
  os.remove(os.path.join(d, row['audio_filename']))
  return row['audio_filename'], 'missing'


def duration_mismatch(d, row):
  _set_in_csv(d, 'duration', str(float(row['duration']) + 0.5))
  return row['audio_filename'], 'differs from the CSV'


def wrong_sample_rate(d, row):
  p = os.path.join(d, row['audio_filename'])
  x, sr = sf.read(p)
  sf.write(p, x[::8], sr // 8, subtype='PCM_16')
  _set_in_csv(d, 'duration', str(len(x[::8]) / (sr // 8)))
  return row['audio_filename'], 'below the dataset'


def bad_csv_value(d, row):
  _set_in_csv(d, 'year', 'MMIV')
  return 'maestro-v3.0.0.csv:', 'bad row'


PIECE_FAULTS = [corrupt_wav, truncated_wav, empty_wav, missing_wav, duration_mismatch,
                wrong_sample_rate, bad_midi, missing_midi, bad_csv_value]


def _prepare(manual_dir, data_dir, policy):
  return maestro.prepare(TEST_CONFIG, manual_dir=manual_dir, data_dir=data_dir,
                         on_bad_file=policy)


def _nothing_prepared(data_dir):
  found = [f for _, _, files in os.walk(data_dir) for f in files if f == 'dataset_info.json']
  return not found and not maestro.Maestro(config=TEST_CONFIG, data_dir=data_dir).is_prepared()


@pytest.mark.parametrize('fault', PIECE_FAULTS, ids=lambda f: f.__name__)
def test_bad_piece_fail_policy(fault, maestro_dir, tmp_path):
  d = str(tmp_path / 'm')
  shutil.copytree(maestro_dir, d)
  name, words = fault(d, _first_train(_rows(maestro_dir)))
  with pytest.raises(maestro.BadFileError) as e:
    _prepare(d, str(tmp_path / 'tfds'), 'fail')
  message = str(e.value)
  assert name in message and words in message and '\n' not in message
  assert _nothing_prepared(str(tmp_path / 'tfds'))


@pytest.mark.parametrize('fault', PIECE_FAULTS, ids=lambda f: f.__name__)
def test_bad_piece_skip_policy(fault, maestro_dir, built, tmp_path):
  d = str(tmp_path / 'm')
  shutil.copytree(maestro_dir, d)
  bad = _first_train(_rows(maestro_dir))
  name, words = fault(d, bad)
  b = _prepare(d, str(tmp_path / 'tfds'), 'skip')
  with open(os.path.join(b.data_dir, maestro.REPORT_NAME)) as f:
    report = json.load(f)
  assert len(report['bad_files']) == 1
  assert name in report['bad_files'][0]['fault'] and words in report['bad_files'][0]['fault']
  kept = b.as_data_source()
  full = built.as_data_source()
  skipped = sum(ex['audio_filename'].decode() == bad['audio_filename'] for ex in full['train'])
  assert len(kept['train']) == len(full['train']) - skipped and skipped > 0
  assert len(kept['test']) == len(full['test'])


@pytest.mark.parametrize('policy', ['fail', 'skip'])
def test_csv_missing_a_column(policy, maestro_dir, tmp_path):
  d = str(tmp_path / 'm')
  shutil.copytree(maestro_dir, d)
  _write_rows(d, _rows(d), [c for c in maestro.CSV_COLUMNS if c != 'duration'])
  with pytest.raises(maestro.BadFileError, match='missing column.*duration'):
    _prepare(d, str(tmp_path / 'tfds'), policy)
  assert _nothing_prepared(str(tmp_path / 'tfds'))


@pytest.mark.parametrize('policy', ['fail', 'skip'])
def test_directory_without_csv(policy, maestro_dir, tmp_path):
  d = str(tmp_path / 'm')
  shutil.copytree(maestro_dir, d)
  os.remove(maestro.find_csv(d))
  with pytest.raises(maestro.BadFileError, match='no maestro-v.*csv'):
    _prepare(d, str(tmp_path / 'tfds'), policy)
  assert _nothing_prepared(str(tmp_path / 'tfds'))


def test_bad_policy_name():
  with pytest.raises(ValueError, match='on_bad_file'):
    maestro.Maestro(config=TEST_CONFIG, on_bad_file='ignore')


def test_builder_with_a_registered_config_pickles(tmp_path):
  # grain's worker processes unpickle the data source, and with it the builder.
  b = maestro.Maestro(config=maestro.get_config('16k'), data_dir=str(tmp_path))
  assert pickle.loads(pickle.dumps(b)).builder_config.name == '16k'


def test_registered_24k_config(maestro_dir, tmp_path):
  b = maestro.prepare('24k', manual_dir=maestro_dir, data_dir=str(tmp_path))
  assert b.info.metadata['sample_rate'] == 24000
  rows = _rows(maestro_dir)
  for split in ('train', 'validation', 'test'):
    assert len(b.as_data_source()[split]) >= 1
    for ex in b.as_data_source()[split]:
      assert ex['audio'].shape == (98304,) and ex['pianoroll'].shape == (128, 88)
      row = next(r for r in rows if r['audio_filename'] == ex['audio_filename'].decode())
      full, _ = _resampled(maestro_dir, row, 24000)
      s = int(ex['start_sample'])
      np.testing.assert_allclose(audio.from_int16(ex['audio']), full[s:s + 98304], atol=1 / 32768)


@pytest.mark.parametrize('version', ['1.0.0', '2.0.0'])
def test_older_maestro_csv_names(version, maestro_dir, built, tmp_path):
  d = str(tmp_path / 'm')
  shutil.copytree(maestro_dir, d)
  os.rename(maestro.find_csv(d), os.path.join(d, f'maestro-v{version}.csv'))
  b = _prepare(d, str(tmp_path / 'tfds'), 'fail')
  assert len(b.as_data_source()['train']) == len(built.as_data_source()['train'])
  shutil.copy(os.path.join(d, f'maestro-v{version}.csv'), os.path.join(d, 'maestro-v3.0.0.csv'))
  with pytest.raises(maestro.BadFileError, match='several MAESTRO CSVs'):
    maestro.find_csv(d)


def test_prepare_cli_builds_and_describes(maestro_dir, tmp_path):
  out = subprocess.run([sys.executable, '-m', 'data.prepare', f'--manual_dir={maestro_dir}',
                        f'--data_dir={tmp_path}', '--config=sr16000_seg16000_hop500',
                        '--num_workers=1'], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'maestro/sr16000_seg16000_hop500, 16000 Hz' in out.stdout and 'ready in' in out.stdout
