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
from experiments import evaluators
from experiments import train
from experiments.evaluators import likelihood
from tests.conftest import ROOT
from tests.conftest import tiny_on_fixture as tiny_config


@pytest.fixture(scope='module')
def run(maestro_dir, tmp_path_factory):
  """(workdir, config, last metrics) of a finished 4-step run on the 8 faked devices, with two named
  evaluators of one type run at its last step ('test': an entry the trainer never heard of)."""
  config = tiny_config(maestro_dir, str(tmp_path_factory.mktemp('tfds')))
  with config.unlocked():
    config.evals.validation.update(every_steps=4, batches=1)
    config.evals.test = config.evals.validation.copy_and_resolve_references()
    config.evals.test.split = 'test'
  workdir = str(tmp_path_factory.mktemp('run'))
  last = train.train_and_evaluate(config, workdir)
  return workdir, config, last


def _split_samples(config, split):
  c = config.input.copy_and_resolve_references()
  c.split = split
  source, _ = pipeline.load_source(c)
  return [len(source[i]['audio']) for i in range(len(source))]


def test_whole_split_counts_every_predicted_sample(run):
  workdir, config, _ = run
  record = evaluate.evaluate_checkpoint(workdir, step=4)
  lengths = _split_samples(config, 'validation')
  assert len(lengths) > 1  # padding of the last batch is exercised (batch 8, 5 segments)
  assert record['samples'] == sum(n - 1 for n in lengths)
  assert record['step'] == 4 and record['total_steps'] == 4
  assert 0 < record['marginal_entropy_bits'] < 8
  assert 0 < record['bits_per_sample'] < 16
  assert math.isclose(record['bits_per_sample'], record['nll'] / math.log(2), rel_tol=1e-6)


def test_results_file_is_keyed_by_step_and_caches_the_marginal(run, monkeypatch):
  workdir, _, _ = run
  first = evaluate.evaluate_checkpoint(workdir, step=2)
  monkeypatch.setattr(likelihood, 'marginal_entropy_bits', lambda *a: pytest.fail('not cached'))
  second = evaluate.evaluate_checkpoint(workdir, step=4)
  results = json.load(open(evaluate.results_path(workdir, 'validation')))
  assert {'2', '4'} <= set(results['steps'])
  assert results['steps']['2']['bits_per_sample'] == first['bits_per_sample']
  assert results['steps']['4']['bits_per_sample'] == second['bits_per_sample']
  assert results['baseline']['values']['marginal_entropy_bits'] == second['marginal_entropy_bits']
  assert os.listdir(os.path.join(workdir, 'tb', 'eval_validation'))
  assert not [f for f in os.listdir(workdir) if '.tmp' in f]


def test_one_device_job_matches_eight_devices(run):
  workdir, _, _ = run
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
  workdir, _, _ = run
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
  workdir, _, _ = run
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
  workdir, _, _ = run
  with pytest.raises(FileNotFoundError, match=r'no checkpoint of step 3; it has steps \[2, 4\]'):
    evaluate.evaluate_checkpoint(workdir, step=3)


def test_evaluators_by_name_and_type(run):
  workdir, config, _ = run
  with pytest.raises(ValueError, match=r"--eval=nope: the run's config.evals has "
                     'sample, test, validation'):
    evaluate.evaluate_checkpoint(workdir, step=4, eval_name='nope')
  with pytest.raises(ValueError, match=r"config.evals.x.type='nope': expected one of "
                     r'clip_statistics, description_length, likelihood, samples, '
                     'spectral'):
    evaluators.create(None, 'x', {'type': 'nope'})
  with pytest.raises(ValueError, match='config.evals.validation: .*batchez'):
    evaluators.create(None, 'validation', dict(config.evals.validation.to_dict(), batchez=2))


def test_a_new_evaluator_entry_needs_no_trainer_change(run):
  _, _, last = run
  assert last['validation_samples'] > 0 and last['test_samples'] > 0
  assert last['validation_bits_per_sample'] != last['test_bits_per_sample']
