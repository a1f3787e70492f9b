"""The evaluation job: whole-split NLL, the marginal baseline, the results file, --follow."""

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from data import pipeline
from experiments import checkpoint
from experiments import evaluate
from experiments import train
from experiments.configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATASET = 'sr16000_seg16000_hop500'  # tests/conftest.py's TEST_CONFIG: 1 s segments


def tiny_config(maestro_dir: str, data_dir: str, variant: str = 'runlocal'):
  """The runlocal WaveNet, 3 layers deep, on the conftest corpus: 4 steps, checkpoints at 2 and
  4."""
  config = common.load(os.path.join(ROOT, f'experiments/configs/wavenet.py:{variant}'))
  config.input.dataset = DATASET
  config.input.manual_dir = maestro_dir
  config.input.data_dir = data_dir
  config.input.crop_samples = 2000  # a multiple of the 500-sample hop
  config.total_steps = 4
  config.log_every_steps = 2
  config.checkpoint.every_steps = 2
  config.evals.every_steps = 0
  config.evals.sample_every_steps = 0
  config.evals.crop_samples = None
  config.model.num_layers = 3  # compile time grows with the layers
  config.microbatches = 1  # 8 rows over 8 faked devices
  if config.local_features:
    config.model.hop_length = 500
  return config


@pytest.fixture(scope='module')
def run(maestro_dir, tmp_path_factory):
  """(workdir, config) of a finished 4-step run on the 8 faked devices."""
  config = tiny_config(maestro_dir, str(tmp_path_factory.mktemp('tfds')))
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(config, workdir)
  return workdir, config


def _split_samples(config, split):
  c = config.input.copy_and_resolve_references()
  c.split = split
  source, _ = pipeline.load_source(c)
  return [len(source[i]['audio']) for i in range(len(source))]


def test_whole_split_counts_every_predicted_sample(run):
  workdir, config = run
  record = evaluate.evaluate_checkpoint(workdir, step=4)
  lengths = _split_samples(config, 'validation')
  assert len(lengths) > 1  # padding of the last batch is exercised (batch 8, 5 segments)
  assert record['samples'] == sum(n - 1 for n in lengths)
  assert record['step'] == 4 and record['total_steps'] == 4
  assert 0 < record['marginal_entropy_bits'] < 8
  assert 0 < record['bits_per_sample'] < 16
  assert math.isclose(record['bits_per_sample'], record['nll'] / math.log(2))


def test_results_file_is_keyed_by_step_and_caches_the_marginal(run, monkeypatch):
  workdir, _ = run
  first = evaluate.evaluate_checkpoint(workdir, step=2)
  monkeypatch.setattr(train, 'marginal_entropy_bits', lambda *a: pytest.fail('not cached'))
  second = evaluate.evaluate_checkpoint(workdir, step=4)
  results = json.load(open(evaluate.results_path(workdir, 'validation')))
  assert {'2', '4'} <= set(results['steps'])
  assert results['steps']['2']['bits_per_sample'] == first['bits_per_sample']
  assert results['steps']['4']['bits_per_sample'] == second['bits_per_sample']
  assert results['marginal']['entropy_bits'] == second['marginal_entropy_bits']
  assert os.listdir(os.path.join(workdir, 'tb', 'eval_validation'))
  assert not [f for f in os.listdir(workdir) if '.tmp' in f]


def test_one_device_job_matches_eight_devices(run):
  workdir, _ = run
  eight = evaluate.evaluate_checkpoint(workdir, step=4, split='test')
  os.remove(evaluate.results_path(workdir, 'test'))
  subprocess.run([sys.executable, '-m', 'experiments.evaluate', f'--workdir={workdir}',
                  '--split=test', '--batch_size=3'], cwd=ROOT, check=True, capture_output=True,
                 timeout=300, env=dict(os.environ, XLA_FLAGS=''))
  one = json.load(open(evaluate.results_path(workdir, 'test')))['steps']['4']
  assert one['samples'] == eight['samples'] and one['batch_size'] == 3
  assert abs(one['bits_per_sample'] - eight['bits_per_sample']) < 1e-4


def _copy_checkpoint(src_workdir, dst_workdir, step):
  """Copies a checkpoint and renames it into place, as Orbax finalises one: all at once."""
  dst = checkpoint.directory(dst_workdir)
  os.makedirs(dst, exist_ok=True)
  staging = os.path.join(dst_workdir, f'staging{step}')
  shutil.copytree(os.path.join(checkpoint.directory(src_workdir), str(step)), staging)
  os.rename(staging, os.path.join(dst, str(step)))


def test_follow_evaluates_checkpoints_as_they_appear_and_stops_at_total_steps(run, tmp_path):
  workdir, _ = run
  follower = str(tmp_path / 'follower')
  _copy_checkpoint(workdir, follower, 2)
  path = evaluate.results_path(follower, 'validation')

  def trainer():  # writes checkpoint 4 once checkpoint 2 has been evaluated
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not os.path.exists(path):
      time.sleep(0.05)
    _copy_checkpoint(workdir, follower, 4)

  thread = threading.Thread(target=trainer)
  thread.start()
  try:
    new = evaluate.follow(follower, poll_seconds=0.05, timeout_seconds=120)
  finally:
    thread.join()
  assert sorted(new) == [2, 4]
  assert set(json.load(open(path))['steps']) == {'2', '4'}
  assert evaluate.follow(follower, poll_seconds=0.05, timeout_seconds=0) == {}  # already done


def test_follow_times_out_without_new_checkpoints(run, tmp_path):
  workdir, _ = run
  follower = str(tmp_path / 'follower')
  _copy_checkpoint(workdir, follower, 2)
  with pytest.raises(TimeoutError, match=r'no new checkpoint .* evaluated \[2\]'):
    evaluate.follow(follower, poll_seconds=0.05, timeout_seconds=0.2)


def test_missing_checkpoint_is_one_line(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoint to evaluate'):
    evaluate.evaluate_checkpoint(str(tmp_path))
  out = subprocess.run([sys.executable, '-m', 'experiments.evaluate', f'--workdir={tmp_path}'],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, XLA_FLAGS=''))
  assert out.returncode == 1
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('evaluate: ') and 'no checkpoint to evaluate' in last
  assert 'Traceback' not in out.stderr


def test_missing_step_names_the_steps_there(run):
  workdir, _ = run
  with pytest.raises(FileNotFoundError, match=r'no checkpoint of step 3; it has steps \[2, 4\]'):
    evaluate.evaluate_checkpoint(workdir, step=3)
