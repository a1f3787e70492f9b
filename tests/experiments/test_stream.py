"""Endless streaming: files, pipes and the HTTP server, for every autoregressive family."""

import http.client
import logging
import os
import re
import resource
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from experiments import sample
from experiments import stream
from experiments import train
import models
from tests.conftest import ROOT
from tests.conftest import run_module
from tests.conftest import tiny_samplernn
from tests.conftest import tiny_sparse_transformer
from tests.conftest import tiny_wavenet

RATE = 16000


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """{family: workdir} of 2-step tiny WaveNet, SampleRNN and Sparse Transformer (context 256)
  runs."""
  out = {}
  for name, tiny in (('wavenet', tiny_wavenet), ('samplernn', tiny_samplernn),
                     ('sparse_transformer', tiny_sparse_transformer)):
    out[name] = str(tmp_path_factory.mktemp(name))
    train.train_and_evaluate(tiny(total_steps=2), out[name])
  return out


def _audio(workdir, streams=2, chunk=800, **kwargs):
  config, model, variables, _ = stream.load(workdir)
  return stream.chunks(config, model, variables, streams=streams, chunk_samples=chunk, **kwargs)


def test_the_autoregressive_families_are_the_streamable_ones():
  streamable = {n for n in models.families() if stream.is_autoregressive(models.family(n))}
  assert {'wavenet', 'sparse_transformer', 'samplernn'} <= streamable
  assert not streamable & {'waveglow', 'melgan', 'wavegan', 'parallel_wavenet'}


@pytest.mark.parametrize('name', ['wavenet', 'samplernn', 'sparse_transformer'])
def test_file_channels_are_the_streams_sample_py_draws(name, runs, tmp_path):
  """0.3 s (past the Sparse Transformer's 256-sample window, so it slides) in 2 channels; the
  file reads as valid while it grows, and channel i is sample.py's file i."""
  workdir = runs[name]
  path = str(tmp_path / 'endless.wav')
  sizes = []
  audio = _audio(workdir)

  def watched():
    for chunk in audio:
      yield chunk
      if os.path.exists(path):
        sizes.append(sf.info(path).frames)
  frames = stream.to_file(path, watched(), RATE, 2, stream.Pace(RATE), seconds=0.3)
  assert frames == 4800 and sizes[:2] == [800, 1600]  # the header kept up with the data
  got, rate = sf.read(path, dtype='int16')
  assert rate == RATE and got.shape == (4800, 2)
  files = sample.sample(workdir, 2, 0.3, str(tmp_path / 'files'), chunk_seconds=0.05)
  for i, f in enumerate(files):
    np.testing.assert_array_equal(sf.read(f, dtype='int16')[0], got[:, i])


@pytest.mark.parametrize('name', ['wavenet', 'samplernn', 'sparse_transformer'])
def test_a_saved_sampler_state_resumes_the_stream_exactly(name, runs, tmp_path):
  """Two chunks straight through, against one chunk, its state saved to disk and loaded into
  a fresh sampler, then the next chunk."""
  workdir = runs[name]
  config, model, variables, step = stream.load(workdir)
  kwargs = dict(streams=2, chunk_samples=300, seed=5, temperature=1.0)
  straight = np.concatenate(list(stream.chunks(config, model, variables, num_samples=600,
                                               **kwargs)), axis=1)
  keep = {}
  first = next(stream.chunks(config, model, variables, keep=keep, **kwargs))
  settings = stream._settings(config, step, 2, 5, 1.0, None)
  path = str(tmp_path / 'state.npz')
  stream.save_state(path, keep['state'], settings, 300)
  template = {}
  list(stream.chunks(config, model, variables, num_samples=0, keep=template, **kwargs))
  resume, frames = stream.load_state(path, template['state'], settings)
  assert frames == 300
  second = next(stream.chunks(config, model, variables, resume=resume, **kwargs))
  np.testing.assert_array_equal(np.concatenate([first, second], axis=1), straight)
  with pytest.raises(ValueError, match=r'holds a stream of other settings: seed 5 \(now 6\)'):
    stream.load_state(path, template['state'], dict(settings, seed=6))


def test_a_restarted_job_continues_its_file_without_a_seam(runs, tmp_path):
  """--state: a job stopped at 0.3 s (plus frames written after its last saved state, as a kill
  between the two would leave) and restarted to 0.6 s writes what one run to 0.6 s writes."""
  out, state = str(tmp_path / 'endless.wav'), str(tmp_path / 'state.npz')
  run = lambda seconds: run_module(
      'experiments.stream', f'--workdir={runs["samplernn"]}', f'--out={out}', f'--state={state}',
      f'--seconds={seconds}', '--chunk_seconds=0.05', env=dict(os.environ, XLA_FLAGS=''))
  code, log = run(0.3)
  assert code == 0, log
  with sf.SoundFile(out, 'r+') as f:  # written after the last saved state: to be cut
    f.seek(0, sf.SEEK_END)
    f.write(np.full(100, 1234, np.int16))
  code, log = run(0.6)
  assert code == 0 and 'resuming the stream' in log, log
  got = sf.read(out, dtype='int16')[0]
  ref = str(tmp_path / 'straight.wav')
  stream.to_file(ref, _audio(runs['samplernn'], streams=1), RATE, 1, stream.Pace(RATE),
                 seconds=0.6)
  np.testing.assert_array_equal(got, sf.read(ref, dtype='int16')[0])


def test_memory_does_not_grow_with_the_duration(runs):
  """Peak RSS after 400 more chunks (2 s of 2 streams) stays within 32 MB of the peak after 40."""
  audio = _audio(runs['wavenet'], chunk=80)
  for _ in range(40):
    next(audio)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  for _ in range(400):
    next(audio)
  assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32 * 1024


def test_pace_reports_falling_behind_real_time(caplog):
  caplog.set_level(logging.WARNING)
  pace = stream.Pace(RATE, every=0.)
  time.sleep(0.05)
  assert pace(RATE // 100) < 1  # 10 ms of audio in 50 ms
  assert any('behind real time' in r.getMessage() for r in caplog.records)


def test_stdout_gives_raw_pcm_or_a_wav(runs):
  env = dict(os.environ, XLA_FLAGS='')
  for fmt in ('raw', 'wav'):
    out = subprocess.run([sys.executable, '-m', 'experiments.stream',
                          f'--workdir={runs["wavenet"]}', '--out=-', f'--format={fmt}',
                          '--seconds=0.25', '--chunk_seconds=0.1', '--streams=2'],
                         cwd=ROOT, capture_output=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    data = out.stdout
    if fmt == 'wav':
      assert data[:4] == b'RIFF' and data[8:16] == b'WAVEfmt '
      channels, rate = struct.unpack('<HI', data[22:28])
      assert (channels, rate) == (2, RATE) and struct.unpack('<I', data[40:44])[0] == 4000 * 4
      data = data[44:]
    assert len(data) == 4000 * 2 * 2  # frames x channels x 2 bytes
  code, out = run_module('experiments.stream', f'--workdir={runs["wavenet"]}',
                         f'--out={tmp_path_of(runs)}/no/such/dir/x.wav', '--seconds=0.1', env=env)
  assert code == 1 and 'cannot write there' in out.strip().splitlines()[-1], out


def tmp_path_of(runs):
  return os.path.dirname(runs['wavenet'])


def _get(port, path, read=None):
  conn = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
  conn.request('GET', path)
  response = conn.getresponse()
  body = response.read(read) if read else response.read()
  return response, body, conn


def test_server_pages_the_player_streams_wav_and_caps_listeners(runs):
  broadcast = stream.Broadcast(_audio(runs['wavenet'], streams=2, chunk=400),
                               streams=2, rate=RATE, max_listeners=1, buffer_chunks=2)
  server = stream.make_server(broadcast, '127.0.0.1', 0, 'test')
  threading.Thread(target=server.serve_forever, daemon=True).start()
  port = server.server_address[1]
  try:
    response, page, _ = _get(port, '/')
    assert response.status == 200 and b'<audio' in page and b'/stream.wav' in page
    assert _get(port, '/etc/passwd')[0].status == 404
    assert _get(port, '/stream.wav/../x')[0].status == 404
    response, head, conn = _get(port, '/stream.wav', read=44 + 2 * 4000)
    assert response.status == 200 and response.getheader('Content-Type') == 'audio/wav'
    assert head[:4] == b'RIFF' and struct.unpack('<I', head[40:44])[0] == 0xFFFFFFFF
    assert len(head) == 44 + 2 * 4000  # a quarter second of 16-bit mono, and more to come
    second, body, _ = _get(port, '/stream.wav')  # the one stream is taken
    assert second.status == 503 and b'all 1 streams are taken' in body
    status = _get(port, '/status.json')[1]
    assert b'"listeners": 1' in status
    response.close()
    conn.close()
    deadline = time.time() + 30
    while broadcast.listeners() and time.time() < deadline:  # the writer notices the close
      time.sleep(0.1)
    assert broadcast.listeners() == 0
    response, head, again = _get(port, '/stream.wav', read=44 + 2 * 4000)  # a reconnect
    assert response.status == 200 and len(head) == 44 + 2 * 4000
    response.close()
    again.close()
  finally:
    broadcast.stop()
    server.shutdown()
    server.server_close()


def test_cli_serves_on_loopback_by_default(runs):
  proc = subprocess.Popen([sys.executable, '-m', 'experiments.stream',
                           f'--workdir={runs["wavenet"]}', '--port=0', '--chunk_seconds=0.05'],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=dict(os.environ, XLA_FLAGS=''))
  try:
    line = proc.stdout.readline()
    match = re.search(r'on http://127\.0\.0\.1:(\d+)/', line)
    assert match, line
    response, head, _ = _get(int(match.group(1)), '/stream.wav', read=44 + 1600)
    assert response.status == 200 and len(head) == 44 + 1600
  finally:
    proc.terminate()  # SIGTERM: a clean stop
    assert proc.wait(timeout=60) == 0
