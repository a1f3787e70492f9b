"""Memory plans: a train step compiled ahead of time for a target mesh, bytes per device."""

import json
import os
import subprocess
import sys

import jax
import pytest

from experiments import memory
from experiments.configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'experiments', 'configs', 'wavenet.py')


def _config(mesh, microbatches=1):
  c = common.load(f'{CONFIG}:runlocal')
  with c.unlocked():
    c.mesh.update(mesh)
    c.microbatches = microbatches
  return c


def test_plan_agrees_with_the_shardings_and_microbatches_cut_activations():
  whole = memory.plan(_config({'data': 2, 'model': 2}), jax.devices()[:4], device_memory_gb=1)
  # XLA's argument bytes are the shards our shardings give: state and batch (up to scalars).
  ours = whole['params_bytes'] + whole['opt_state_bytes'] + whole['batch_bytes']
  assert abs(whole['argument_bytes'] - ours) <= 16, (whole['argument_bytes'], ours)
  assert whole['aliased_bytes'] > 0.9 * whole['output_bytes']  # the donated state is reused
  assert whole['batch_bytes'] == 8 * 2048 * 4 // 2  # int32 codes, batch over the 2 data shards
  single = memory.plan(_config({'data': 1, 'model': 1}), jax.devices()[:1])
  assert single['params_bytes'] == 4 * single['parameters']
  # The gate channels shard over `model`: each device holds less than all of the parameters.
  assert single['params_bytes'] / 2 < whole['params_bytes'] < single['params_bytes']
  micro = memory.plan(_config({'data': 2, 'model': 2}, microbatches=4), jax.devices()[:4])
  assert micro['temporary_bytes'] < 0.6 * whole['temporary_bytes']
  assert whole['peak_bytes'] > whole['temporary_bytes'] and whole['fits'] is True
  assert 'per device (GiB)' in memory.describe(whole)


def test_cli_fakes_the_devices_of_the_target_mesh(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  cmd = [sys.executable, '-m', 'experiments.benchmark', '--what=memory',
         f'--config={CONFIG}:runlocal', '--config.microbatches=1', '--device_memory_gb=0.001']
  out = tmp_path / 'memory.json'
  proc = subprocess.run(cmd + ['--mesh=data:16', '--config.input.batch_size=32',
                               f'--json={out}'], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  plan = json.loads(out.read_text())['memory']
  assert plan['mesh'] == {'data': 16, 'model': 1} and plan['fits'] is False
  assert plan['batch_bytes'] == 2 * 2048 * 4  # 32 rows of int32 codes over 16 devices

  proc = subprocess.run(cmd + ['--mesh=data:2,pipe:2'], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode != 0 and "unknown axes ['pipe']" in proc.stderr


@pytest.mark.parametrize('text', ['data=4', 'data:x', ''])
def test_bad_mesh_text(text):
  with pytest.raises(ValueError, match='axis:size'):
    memory.parse_mesh(text)
