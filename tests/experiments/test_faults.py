"""Runs that collide, diverge, meet a corrupt checkpoint or get bad settings: nothing is lost,
nothing is silently wrong, and each fault is one line naming its cause."""

import glob
import logging
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from experiments import checkpoint
from experiments import evaluate
from experiments import runtime
from experiments import sample
from experiments import state as state_lib
from experiments import train
from tests.conftest import ROOT
from tests.conftest import run_module
from tests.conftest import tiny_on_fixture
from tests.conftest import tiny_wavenet


@pytest.fixture(scope='module')
def fixture_config(maestro_dir, tmp_path_factory):
  """config(**overrides): the 3-layer WaveNet on the 4-piece fixture corpus, 6 steps,
  checkpoints 2, 4, 6 (all kept)."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))

  def config(**overrides):
    c = tiny_on_fixture(maestro_dir, data_dir)
    c.total_steps, c.checkpoint.keep = 6, 5
    c.update_from_flattened_dict(overrides)
    return c
  return config


@pytest.fixture(scope='module')
def run(fixture_config, tmp_path_factory):
  """The workdir of a finished `fixture_config()` run."""
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(fixture_config(), workdir)
  return workdir


def _copy(run, tmp_path) -> str:
  out = str(tmp_path / 'copy')
  shutil.copytree(run, out)
  return out


def _step_dir(workdir: str, step: int) -> str:
  return os.path.join(checkpoint.directory(workdir), str(step))


# ---------------------------------------------------------------------------------------------
# One job per directory.


def _hold(directory: str, role: str) -> subprocess.Popen:
  """Another process that takes `role`'s lock on `directory` (runtime.exclusive, the call every
  job makes) and keeps it until killed."""
  code = ('import sys, time; from experiments import runtime\n'
          f'with runtime.exclusive({directory!r}, {role!r}, "a trainer of wavenet"):\n'
          '  print("held", flush=True); time.sleep(600)')
  proc = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, stdout=subprocess.PIPE,
                          text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.stdout.readline().strip() == 'held'
  return proc


def test_a_second_trainer_fails_naming_the_first_and_a_killed_ones_lock_does_not_block(
    tmp_path):
  workdir = str(tmp_path / 'w')
  holder = _hold(workdir, 'train')
  try:
    with pytest.raises(runtime.DirectoryBusy,
                       match=rf'is in use by a trainer of wavenet \(host .+, pid {holder.pid}\)'):
      train.train_and_evaluate(tiny_wavenet(total_steps=2), workdir)
    assert not os.path.exists(checkpoint.directory(workdir))  # nothing written
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert os.path.exists(os.path.join(workdir, '.train.lock'))  # stale: the kill left it
  train.train_and_evaluate(tiny_wavenet(total_steps=2), workdir)
  assert checkpoint.load(workdir)[0]['step'] == 2


def test_evaluate_and_sample_take_their_own_locks(run, tmp_path):
  with runtime.exclusive(run, 'evaluate_validation', 'an evaluation of validation'):
    with pytest.raises(runtime.DirectoryBusy, match=f'pid {os.getpid()}'):
      evaluate.follow(run, poll_seconds=0.01, timeout_seconds=0.1)
    # the trainer's lock and the evaluator's are different: they run side by side
    with runtime.exclusive(run, 'train', 'a trainer'):
      pass
  out = str(tmp_path / 'wav')
  with runtime.exclusive(out, 'sample', 'a sampler'):
    with pytest.raises(runtime.DirectoryBusy, match='in use by a sampler'):
      sample.sample(run, 1, 0.01, out)


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / 'file'
  path.write_text('x')
  with pytest.raises(ValueError, match=f'{path}: not a directory'):
    train.train_and_evaluate(tiny_wavenet(total_steps=2), str(path))


# ---------------------------------------------------------------------------------------------
# Divergence and config values no run can use.


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  """The issue's run: learning rate 1e6. Without the guard its checkpoints 6 and 8 would have
  rotated out step 4 (keep 2) and the run would have exited 0."""
  workdir = str(tmp_path / 'w')
  train.train_and_evaluate(tiny_wavenet(total_steps=4, **{'checkpoint.keep': 2}), workdir)
  good = checkpoint.load(workdir)[0]
  c = tiny_wavenet(total_steps=30, **{'checkpoint.keep': 2, 'optim.learning_rate': 1e6})
  with pytest.raises(FloatingPointError, match=r'step 10: diverged: bits_per_sample .* is above '
                     r'16 .*3 checks in a row since step 6; stopped with the last good '
                     r'checkpoint \(step 4\) intact'):
    train.train_and_evaluate(c, workdir)
  state, _ = checkpoint.load(workdir)
  assert int(state['step']) == 4 and sorted(os.listdir(checkpoint.directory(workdir))) == [
      '2', '4']
  for a, b in zip(jax.tree.leaves(good['params']), jax.tree.leaves(state['params'])):
    np.testing.assert_array_equal(a, b)


def test_divergence_guard_rules():
  c = tiny_wavenet()
  guard = runtime.DivergenceGuard(c.divergence, bits=8)

  class Manager:
    def wait_until_finished(self):
      pass

    def latest_step(self):
      return 4

  mngr = Manager()
  for step, loss in enumerate([5.0, 4.0, 3.0, 3.0]):
    assert not guard(step, {'loss': loss}, mngr)
  assert guard(4, {'loss': 36.0}, mngr)  # > 10 x median 3.5: suspect, no checkpoint
  assert not guard(5, {'loss': 3.0}, mngr)  # recovered: the count starts again
  assert guard(6, {'loss': 2.0, 'bits_per_sample': 16.5}, mngr)  # above 8 + 8 bits
  assert guard(7, {'loss': 40.0}, mngr)
  with pytest.raises(FloatingPointError, match='since step 6'):
    guard(8, {'loss': 50.0}, mngr)
  off = c.divergence.copy_and_resolve_references()
  off.update(factor=0.0, bits_margin=0.0)
  guard = runtime.DivergenceGuard(off, bits=8)
  assert not any(guard(s, {'loss': 10.0 ** s, 'bits_per_sample': 99.}, mngr) for s in range(9))


@pytest.mark.parametrize('override, message', [
    ({'optim.learning_rate': -1e-3}, r'config.optim.learning_rate=-0.001: expected a finite '
     'learning rate >= 0'),
    ({'total_steps': 0}, r'config.total_steps=0: expected a positive number of steps'),
    ({'checkpoint.every_steps': 0}, r'config.checkpoint.every_steps=0: expected a positive'),
])
def test_config_values_no_run_can_use(override, message, tmp_path):
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(tiny_wavenet(**override), str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')


def test_an_eval_batch_that_does_not_fit_the_mesh_fails_before_the_first_step(tmp_path):
  c = tiny_wavenet(**{'evals.validation.every_steps': 4, 'evals.validation.batch_size': 6})
  with pytest.raises(ValueError, match=r'config.evals.validation.batch_size=6 is not divisible '
                     'by the 8 devices'):
    train.train_and_evaluate(c, str(tmp_path / 'w'))
  assert not os.path.exists(checkpoint.directory(str(tmp_path / 'w')))  # no step ran


def test_a_resume_with_another_batch_size_names_the_key(run, fixture_config, tmp_path):
  workdir = _copy(run, tmp_path)
  c = fixture_config(total_steps=8, **{'input.batch_size': 16})
  with pytest.raises(ValueError, match=r'config.input.batch_size=16: .* was trained with '
                     r'input.batch_size=8'):
    train.train_and_evaluate(c, workdir)


# ---------------------------------------------------------------------------------------------
# Corrupt checkpoints.


def _truncate(path: str) -> None:
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def _truncate_arrays(step_dir: str) -> None:
  for path in glob.glob(os.path.join(step_dir, 'state', '**', 'd', '*'), recursive=True):
    _truncate(path)


def _drop_metadata(step_dir: str) -> None:
  os.remove(os.path.join(step_dir, 'state', '_METADATA'))


def _garbage_config(step_dir: str) -> None:
  for path in glob.glob(os.path.join(step_dir, 'config', '*')):
    with open(path, 'w') as f:
      f.write('{not json')


CORRUPTIONS = {'truncated_arrays': (_truncate_arrays, 6), 'missing_metadata': (_drop_metadata, 6),
               'garbage_config': (_garbage_config, 6),
               'empty_step_dir': (lambda d: os.makedirs(d[:-1] + '8'), 8)}


@pytest.mark.parametrize('fault', sorted(CORRUPTIONS))
def test_a_corrupt_newest_checkpoint_is_skipped_in_one_line(fault, run, tmp_path, caplog):
  workdir = _copy(run, tmp_path)
  corrupt, bad_step = CORRUPTIONS[fault]
  corrupt(_step_dir(workdir, 6))
  caplog.set_level(logging.WARNING)
  state, _ = checkpoint.load(workdir)
  assert int(state['step']) == (6 if bad_step == 8 else 4)
  skipped = [r.getMessage() for r in caplog.records if 'does not restore' in r.getMessage()]
  assert len(skipped) == 1 and skipped[0].startswith(f'checkpoint {bad_step} in ')
  assert '\n' not in skipped[0] and len(skipped[0]) < 400
  with pytest.raises(ValueError, match=f'checkpoint {bad_step} does not restore'):
    checkpoint.load(workdir, step=bad_step)  # an explicit step is not replaced


def test_train_evaluate_and_sample_fall_back_past_a_corrupt_checkpoint(run, fixture_config,
                                                                      tmp_path):
  workdir = _copy(run, tmp_path)
  _truncate_arrays(_step_dir(workdir, 6))
  record = evaluate.evaluate_checkpoint(workdir, crop_samples=2000)
  assert record['step'] == 4
  paths = sample.sample(workdir, 1, 0.01, str(tmp_path / 'wav'))
  assert os.path.basename(paths[0]).startswith('step4_')
  last = train.train_and_evaluate(fixture_config(total_steps=8), workdir)
  assert last and int(checkpoint.load(workdir)[0]['step']) == 8  # step 6 saved anew
  assert os.path.isdir(os.path.join(workdir, 'unrestorable_checkpoints', '6'))  # kept aside


def test_evaluate_and_sample_do_not_read_the_optimizer_state(run, tmp_path, monkeypatch):
  """They restore the variables alone (a partial restore: Orbax reads no other array), so a
  corrupt optimiser state cannot stop them."""
  targets = []
  real = checkpoint.restore

  def spy(mngr, step, abstract_state, batches=None, partial=False):
    targets.append((sorted(abstract_state), partial))
    return real(mngr, step, abstract_state, batches, partial)
  monkeypatch.setattr(checkpoint, 'restore', spy)
  assert evaluate.evaluate_checkpoint(run, step=6, crop_samples=2000)['step'] == 6
  sample.sample(run, 1, 0.01, str(tmp_path / 'wav'), step=6)
  assert targets == [(['params', 'step'], True)] * 2
  assert sorted(checkpoint.load(run, keys=state_lib.VARIABLE_KEYS)[0]) == ['params', 'step']


# ---------------------------------------------------------------------------------------------
# The evaluate job's results, the sampler's files and flags.


def test_evaluate_keys_results_by_settings_and_refuses_to_score_nothing(run, tmp_path):
  workdir = _copy(run, tmp_path)
  whole = evaluate.evaluate_checkpoint(workdir, step=6)
  with pytest.raises(ValueError, match=r'--crop_samples=1: expected at least 2'):
    evaluate.evaluate_checkpoint(workdir, step=6, crop_samples=1)
  crop = evaluate.evaluate_checkpoint(workdir, step=6, crop_samples=2000)
  steps = evaluate.read_results(workdir, 'validation')['steps']
  assert set(steps) == {'6', '6/crop_samples=2000'}
  assert steps['6']['samples'] == whole['samples'] > crop['samples'] == steps[
      '6/crop_samples=2000']['samples'] > 0


def test_sampling_leaves_no_finished_looking_file_when_it_fails(run, tmp_path, monkeypatch):
  out = tmp_path / 'wav'
  real = sample.generate_audio

  def full_disk(*args, **kwargs):
    waves = real(*args, **kwargs)
    yield next(waves)
    raise OSError(28, 'No space left on device')
  monkeypatch.setattr(sample, 'generate_audio', full_disk)
  with pytest.raises(OSError, match='No space left'):
    sample.sample(run, 2, 0.1, str(out), chunk_seconds=0.02)
  assert not os.listdir(out)  # no wav, no partial
  monkeypatch.setattr(sample, 'generate_audio', real)
  paths = sample.sample(run, 2, 0.1, str(out), chunk_seconds=0.02)
  assert sorted(os.listdir(out)) == sorted(map(os.path.basename, paths))  # and no lock file
  assert all(sf.info(p).frames == 1600 for p in paths)


@pytest.mark.parametrize('kwargs, message', [
    (dict(seconds=float('inf')), r'--seconds=inf: expected a finite length > 0'),
    (dict(seconds=float('nan')), r'--seconds=nan: expected a finite length > 0'),
    (dict(seconds=1.0, temperature=-1.0), r'--temperature=-1.0: expected a finite temperature'),
    (dict(seconds=1.0, temperature=float('nan')), r'--temperature=nan: expected a finite'),
    (dict(seconds=1.0, prompt='x.wav', prompt_seconds=-2.0), r'--prompt_seconds=-2.0: expected'),
])
def test_sampling_flags_no_sampler_can_use(kwargs, message, run, tmp_path):
  with pytest.raises(ValueError, match=message):
    sample.sample(run, 1, out_dir=str(tmp_path / 'wav'), **kwargs)


def test_sampling_refuses_an_unwritable_out_and_a_prompt_with_nans(run, tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(ValueError, match=f'--out={blocker}/wav: cannot write there'):
    sample.sample(run, 1, 0.01, str(blocker / 'wav'))
  prompt = str(tmp_path / 'nan.wav')
  wave = np.zeros(1600, np.float32)
  wave[100] = np.nan
  sf.write(prompt, wave, 16000, subtype='FLOAT')
  with pytest.raises(ValueError, match=f'{prompt}: .*NaN'):
    sample.sample(run, 1, 0.01, str(tmp_path / 'wav'), prompt=prompt)


def test_a_stuck_note_is_named_before_an_hour_is_sampled(tmp_path, caplog):
  from data import midi as midi_lib  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'stuck.mid')
  midi_lib.write_midi(path, midi_lib.make_notes([0.0, 0.5], [0.5, 3600.0], [60, 64], [80, 80]))
  caplog.set_level(logging.WARNING)
  assert sample.midi_seconds(path) == pytest.approx(3600.0)
  [line] = [r.getMessage() for r in caplog.records if 'stuck note' in r.getMessage()]
  assert 'key 64' in line and '--seconds' in line


def test_cli_faults_are_one_line(tmp_path):
  cases = [
      (('experiments.train', '--config=experiments/configs/nope.py', f'--workdir={tmp_path}'),
       'nope.py'),
      (('experiments.train', '--config=experiments/configs/wavenet.py:runlocal',
        f'--workdir={tmp_path}/w', '--config.checkpoint.every_steps=0'),
       'config.checkpoint.every_steps=0: expected a positive number of steps'),
  ]
  for args, expected in cases:
    code, out = run_module(*args, env=dict(os.environ, XLA_FLAGS=''))
    lines = out.strip().splitlines()
    assert code == 1 and expected in lines[-1] and 'Traceback' not in out, out
