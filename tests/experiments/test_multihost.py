"""Multi-process jobs through launch/local.sh: 2 processes x 2 CPU devices on loopback train as
1 process x 4 devices does, share checkpoints with a single process, survive a dead peer."""

import glob
import os
import re
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from experiments import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL = os.path.join(ROOT, 'launch', 'local.sh')
CONFIG = 'experiments/configs/wavenet.py:runlocal'
# runlocal's model and batch (8 x 2,048 samples), a few steps, every step logged.
FLAGS = ['--config.microbatches=1', '--config.log_every_steps=1',
         '--config.evals.validation.every_steps=4', '--config.evals.validation.batches=1',
         '--config.evals.sample.every_steps=0', '--config.checkpoint.every_steps=2',
         '--config.optim.warmup_steps=2']


def _env():
  """This interpreter's environment without the suite's 8 faked devices (local.sh sets them)."""
  return {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}


def _launch(keys, job, *flags, **popen):
  return subprocess.Popen(['bash', LOCAL, f'PYTHON={sys.executable}', *keys, job, *flags],
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **popen)


def _run(keys, job, *flags, timeout=300):
  proc = _launch(keys, job, *flags)
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out[-4000:]
  return out


def _scalars(logdir: str, tag: str) -> dict:
  """{step: value} of a TensorBoard scalar, read from tensorboardX's event files."""
  out = {}
  for path in sorted(glob.glob(os.path.join(logdir, 'events.out.tfevents.*'))):
    with open(path, 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):  # TFRecord framing: length, its crc, payload, payload crc
      (n,) = struct.unpack('<Q', data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      for v in event.summary.value:
        if v.tag == tag:
          out[event.step] = v.simple_value
  return out


@pytest.mark.slow
def test_two_processes_train_as_one_and_share_checkpoints(tmp_path):
  steps = ['--config.total_steps=4']
  two, one = tmp_path / 'two', tmp_path / 'one'
  out = _run(['PROCESSES=2', 'DEVICES=2'], 'train', f'--config={CONFIG}', f'--workdir={two}',
             *FLAGS, *steps)
  assert '2 processes, 4 devices (2 local, cpu)' in out
  _run(['PROCESSES=1', 'DEVICES=4'], 'train', f'--config={CONFIG}', f'--workdir={one}', *FLAGS,
       *steps)

  loss2, loss1 = (_scalars(str(w / 'tb'), 'train/loss') for w in (two, one))
  assert sorted(loss2) == sorted(loss1) == list(range(1, 5))
  np.testing.assert_allclose([loss2[s] for s in range(1, 5)], [loss1[s] for s in range(1, 5)],
                             rtol=1e-5)
  assert loss2[4] < loss2[1]
  val2, val1 = (_scalars(str(w / 'tb'), 'validation/bits_per_sample') for w in (two, one))
  np.testing.assert_allclose(val2[4], val1[4], rtol=1e-5)

  # The 2-process checkpoint restores in this single process and matches the 1-process run.
  state2, config = checkpoint.load(str(two))
  state1, _ = checkpoint.load(str(one))
  assert int(state2['step']) == 4 and config.model_name == 'wavenet'
  for a, b in zip(jax.tree.leaves(state2['params']), jax.tree.leaves(state1['params'])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _children(pid: int) -> list[int]:
  out = []
  for d in os.listdir('/proc'):
    if d.isdigit():
      try:
        with open(f'/proc/{d}/stat') as f:
          if int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
            out.append(int(d))
      except (OSError, ValueError, IndexError):
        pass
  return out


def _process(launcher_pid: int, index: int) -> int:
  """The pid of JAX process `index` among local.sh's children."""
  for pid in _children(launcher_pid):
    try:
      with open(f'/proc/{pid}/environ', 'rb') as f:
        env = f.read().split(b'\0')
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        cmd = f.read()
    except OSError:
      continue
    if b'experiments.train' in cmd and f'JAX_PROCESS_ID={index}'.encode() in env:
      return pid
  raise AssertionError(f'no JAX process {index} under local.sh ({launcher_pid})')


def _complete_steps(workdir) -> list[int]:
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


@pytest.mark.slow
def test_a_dead_process_stops_the_other_and_a_relaunch_resumes(tmp_path):
  workdir = str(tmp_path / 'run')
  flags = [f'--config={CONFIG}', f'--workdir={workdir}', *FLAGS,
           '--config.evals.validation.every_steps=0']
  # GRACE is long: the survivor must stop by itself (the heartbeat), not by local.sh's SIGKILL.
  proc = _launch(['PROCESSES=2', 'DEVICES=2', 'HEARTBEAT=5', 'GRACE=200'], 'train', *flags,
                 '--config.total_steps=100000')
  try:
    deadline = time.time() + 240
    while not _complete_steps(workdir) and time.time() < deadline and proc.poll() is None:
      time.sleep(0.5)
    assert _complete_steps(workdir), 'no checkpoint within 240 s'
    os.kill(_process(proc.pid, 1), signal.SIGKILL)
    killed = time.time()
    out, _ = proc.communicate(timeout=120)
    elapsed = time.time() - killed
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode != 0
  assert elapsed < 60, f'the surviving process took {elapsed:.0f} s to stop'
  assert 'local.sh: process 1 exited with status 137 (SIGKILL)' in out
  survivor = '\n'.join(l for l in out.splitlines() if l.startswith('[0]'))
  assert re.search(r'heartbeat|task died', survivor, re.IGNORECASE), survivor[-3000:]

  last = _complete_steps(workdir)[-1]
  out = _run(['PROCESSES=2', 'DEVICES=2'], 'train', *flags, f'--config.total_steps={last + 3}')
  assert f'resumed from step {last} at step {last}' in out
  assert _complete_steps(workdir)[-1] == last + 3
