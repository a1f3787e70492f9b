"""Two JAX processes on loopback each read their rows of one global batch, the batch one process
would read."""

import json
import os
import socket
import subprocess
import sys

from tests.conftest import TEST_CONFIG

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_build_global_batches(built, maestro_dir, tmp_path):
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'tests.data.multiprocess_worker', str(port), str(i),
       TEST_CONFIG.name, maestro_dir,
       str(built.data_dir_root), str(tmp_path / f'{i}.json')],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
  for p in procs:
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out.decode()[-3000:]
  r = [json.loads((tmp_path / f'{i}.json').read_text()) for i in range(2)]
  assert r[0]['shape'] == r[1]['shape'] == [4, 2000]
  for step in range(3):
    # Each process contributes its own 2 records; both see the same global batch of 4, laid
    # out process by process along the data axis.
    assert r[0]['global'][step] == r[1]['global'][step]
    assert r[0]['global'][step] == r[0]['local'][step] + r[1]['local'][step]
    # The same records and crops as one process reading the whole batch.
    assert r[0]['global'][step] == r[0]['one_process'][step]
    assert r[0]['one_process_audio_equal'][step]
  # One global order: the first epoch (10 records) holds each record once.
  first_epoch = [i for step in r[0]['global'] for i in step][:10]
  assert sorted(first_epoch) == list(range(10))
