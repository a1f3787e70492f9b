r"""Endless audio from an autoregressive model: to a file, to stdout, or over HTTP.

    python -m experiments.stream --workdir=/tmp/wn --out=/tmp/wn/endless.wav [--seconds=N]
    python -m experiments.stream --workdir=/tmp/wn --out=- --format=wav | ffplay -
    python -m experiments.stream --workdir=/tmp/wn --port=8000 [--host=127.0.0.1] \
        [--streams=4] [--max_listeners=4]      # then open http://127.0.0.1:8000/
    ... [--state=/tmp/wn/stream.npz]           # survives a restart without a seam

Every autoregressive family (the kind with `init_cache` and `step`: WaveNet, SampleRNN, the
Sparse Transformer) samples through its own `generate` for as long as the job runs: their samplers
keep a fixed-size state (WaveNet's ring buffers; SampleRNN's recurrent states; the Sparse
Transformer's window, which slides as in training), step chunk by chunk, and hold one chunk on the host at a time, so memory does
not grow with the duration. Stream i of `--streams` draws with the keys of stream i (as
experiments/sample.py's file i does); positions count in int32, so one run lasts up to 2^31
samples per stream (37 hours at 16 kHz).

Outputs:
  --out=FILE    a 16-bit WAV (header updated after every chunk, so the file reads as valid
                while it grows), `--streams` channels, until --seconds or SIGINT/SIGTERM.
  --out=-       stdout: --format=raw (16-bit little-endian PCM, channels interleaved) or wav (a
                streaming WAV header whose sizes say "unknown", then the same PCM).
  --port=PORT   an HTTP server on --host (127.0.0.1 unless said otherwise) with two paths:
                `/` a page with an <audio> player and the live realtime factor, and
                `/stream.wav` a never-ending mono WAV of one stream; each listener takes a free
                stream of `--streams` (at most --max_listeners at once; the rest get 503).
                `/status.json` feeds the page. Any other path is 404. Generation runs while
                someone listens, ahead of the listeners by at most --buffer_chunks chunks.

The job generates at the model's best speed and reports, at most every 10 s, the audio so far
and the realtime factor, with a warning when it falls behind real time (listeners will hear
gaps). SIGTERM stops it cleanly (the file's header is complete).

--state=PATH saves the sampler's state (its cache and last codes, with the settings and the
frames streamed) after every chunk, atomically; a job started with an existing PATH and the
same checkpoint, seed, temperature and streams resumes from it and draws exactly what the
uninterrupted stream would have drawn: a file continues from the saved frame (anything written
after the last saved state is cut), so the restart leaves no seam.
"""

from collections.abc import Iterator
import http.server
import json
import os
import queue
import signal
import struct
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import soundfile as sf

from data import audio as audio_lib
from data import specs
from experiments import checkpoint
from experiments import runtime
from experiments import sample as sample_lib
from experiments import state as state_lib
import models

ENDLESS = 2 ** 31 - 2  # samples per stream: the samplers count positions in int32


def is_autoregressive(family) -> bool:
  return hasattr(family, 'init_cache') and hasattr(family, 'step')


def load(workdir: str, step: int | None = None):
  """(config, model, variables, step) of an autoregressive run's checkpoint.

  Raises:
    ValueError: the run's family is not autoregressive, or it needs frame conditioning.
  """
  state, config = checkpoint.load(workdir, step, keys=state_lib.VARIABLE_KEYS)
  family, model = models.family(config.model_name), models.create(config)
  if not is_autoregressive(family):
    raise ValueError(f'{workdir}: {config.model_name} is not autoregressive (no init_cache/'
                     'step); endless streaming is for WaveNet, SampleRNN and the Sparse '
                     'Transformer (experiments/sample.py renders any family to files)')
  frames = [k for k in getattr(model, 'conditions', ()) if k in specs.FRAME_FEATURES]
  if frames:
    raise ValueError(f'{workdir}: the model is conditioned on {frames}, which do not go on '
                     'forever; stream an unconditional (or globally conditioned) model')
  return config, model, state_lib.variables(state), int(state['step'])


def chunks(config, model, variables, *, streams: int = 1, seed: int = 0,
           temperature: float = 1.0, chunk_samples: int = 16000, global_id: int | None = None,
           num_samples: int = ENDLESS, resume: dict | None = None,
           keep: dict | None = None) -> Iterator[np.ndarray]:
  """Float audio chunks [streams, <= chunk_samples], `num_samples` per stream (default: as long
  as anyone reads them), from the family's `generate`: from a saved sampler state `resume`,
  and with its state in keep['state'] after each chunk, where given
  (models/layers/autoregressive.keep_state)."""
  if streams < 1:
    raise ValueError(f'--streams={streams}: expected at least 1')
  cond = None
  ids = [k for k in getattr(model, 'conditions', ()) if k not in specs.FRAME_FEATURES]
  if ids and global_id is None:
    raise ValueError(f'the model is conditioned on {ids[0]!r}: pass --global_id')
  if ids:
    cond = {ids[0]: np.full((streams,), global_id, np.int32)}
  family = models.family(config.model_name)
  yield from family.generate(model, variables, jax.random.key(seed), num_samples,
                             batch=streams, cond=cond, temperature=temperature,
                             chunk_samples=chunk_samples, resume=resume, keep=keep)


# ---------------------------------------------------------------------------------------------
# The saved sampler state: a stream that survives a restart without a seam.


def _settings(config, step: int, streams: int, seed: int, temperature: float,
              global_id: int | None) -> dict:
  return {'model_name': config.model_name, 'step': step, 'streams': streams, 'seed': seed,
          'temperature': temperature, 'global_id': global_id}


def save_state(path: str, state: dict, settings: dict, frames: int) -> None:
  """Writes the sampler state (host copies of its arrays), the settings it belongs to and the
  frames streamed so far to `path` (.npz), atomically (tmp + rename)."""
  leaves = jax.tree.leaves(jax.device_get(state))
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    np.savez(f, meta=np.array(json.dumps(dict(settings, frames=frames))), *leaves)
  os.replace(tmp, path)


def load_state(path: str, template: dict, settings: dict) -> tuple[dict, int]:
  """(sampler state, frames streamed) saved in `path`, laid out as `template` (a fresh state of
  the same sampler).

  Raises:
    ValueError: the file is not a saved state, or of another model or stream settings.
  """
  try:
    with np.load(path) as f:
      saved = json.loads(str(f['meta']))
      leaves = [f[f'arr_{i}'] for i in range(len(f.files) - 1)]
  except (OSError, ValueError, KeyError) as e:
    raise ValueError(f'--state={path}: not a saved stream state ({e})') from None
  diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
  if diff:
    raise ValueError(f'--state={path} holds a stream of other settings: ' + ', '.join(
        f'{k} {a!r} (now {b!r})' for k, (a, b) in sorted(diff.items())))
  flat, tree = jax.tree.flatten(template)
  if [(a.shape, a.dtype) for a in leaves] != [(a.shape, a.dtype) for a in flat]:
    raise ValueError(f'--state={path}: its arrays do not fit this model\'s sampler')
  return jax.tree.unflatten(tree, [jnp.asarray(a) for a in leaves]), int(saved['frames'])


class Pace:
  """The realtime factor (seconds of audio per second of wall time) over the last chunks, with
  a warning at most every `every` seconds while it is below 1."""

  def __init__(self, rate: int, every: float = 10.):
    self.rate, self.every = rate, every
    self.factor, self.samples, self._t, self._warned = float('nan'), 0, time.perf_counter(), 0.
    self._logged = self._t

  def __call__(self, n: int) -> float:
    now = time.perf_counter()
    factor = n / self.rate / max(now - self._t, 1e-9)
    self.factor = factor if self.samples == 0 else 0.8 * self.factor + 0.2 * factor
    self.samples += n
    self._t = now
    if self.factor < 1 and now - self._warned > self.every:
      self._warned = now
      logging.warning('behind real time: realtime factor %.2f (listeners hear gaps)',
                      self.factor)
    if now - self._logged > self.every:
      self._logged = now
      logging.info('%.1f s of audio per stream, realtime factor %.2f', self.samples / self.rate,
                   self.factor)
    return self.factor

  def restart(self) -> None:
    """After a pause (no listener): the next chunk does not count the idle time."""
    self._t = time.perf_counter()


def wav_header(rate: int, channels: int, frames: int | None = None) -> bytes:
  """A 44-byte 16-bit PCM WAV header; `frames` None writes the streaming convention
  0xFFFFFFFF for the RIFF and data sizes (length unknown), which players read to the end."""
  data = 0xFFFFFFFF if frames is None else frames * channels * 2
  riff = 0xFFFFFFFF if frames is None else 36 + data
  return (b'RIFF' + struct.pack('<I', riff) + b'WAVEfmt ' +
          struct.pack('<IHHIIHH', 16, 1, channels, rate, rate * channels * 2, channels * 2, 16) +
          b'data' + struct.pack('<I', data))


def pcm(chunk: np.ndarray) -> bytes:
  """Float chunk [C, n] -> interleaved 16-bit little-endian PCM."""
  return np.ascontiguousarray(audio_lib.to_int16(chunk).T).astype('<i2').tobytes()


def to_file(path: str, audio: Iterator[np.ndarray], rate: int, channels: int, pace: Pace,
            seconds: float | None = None, frames: int = 0, on_chunk=None) -> int:
  """Writes `audio` to the WAV `path` (sizes patched after every chunk), until it holds
  `seconds`; returns its frames. `frames` > 0 continues the file from its first `frames`
  (a resumed stream: anything after them came after the saved state and is cut);
  `on_chunk(frames)` runs after each chunk is in the file."""
  limit = None if seconds is None else int(round(seconds * rate))
  if frames and os.path.exists(path):
    f = sf.SoundFile(path, 'r+')
    if (f.samplerate, f.channels) != (rate, channels) or f.frames < frames:
      f.close()
      raise ValueError(f'--out={path}: {f.frames} frames of {f.channels} channels at '
                       f'{f.samplerate} Hz; the saved stream wrote {frames} of {channels} at '
                       f'{rate} Hz')
    f.truncate(frames)
    f.seek(frames)
  else:
    f = sf.SoundFile(path, 'w', samplerate=rate, channels=channels, subtype='PCM_16',
                     format='WAV')
  with f:
    for chunk in audio:
      if limit is not None and frames >= limit:
        break
      if limit is not None:
        chunk = chunk[:, :limit - frames]
      f.write(audio_lib.to_int16(chunk).T)
      f.flush()  # libsndfile rewrites the header's sizes
      frames += chunk.shape[1]
      pace(chunk.shape[1])
      if on_chunk is not None:
        on_chunk(frames)
  return frames


def to_pipe(out, audio: Iterator[np.ndarray], rate: int, channels: int, pace: Pace,
            fmt: str = 'raw', seconds: float | None = None, on_chunk=None) -> int:
  """Writes `audio` to the binary stream `out` as raw PCM or a streaming WAV; returns frames
  (stops quietly when the reader goes away); `on_chunk(frames)` after each chunk."""
  limit = None if seconds is None else int(round(seconds * rate))
  frames = 0
  try:
    if fmt == 'wav':
      out.write(wav_header(rate, channels, limit))
    for chunk in audio:
      if limit is not None:
        chunk = chunk[:, :limit - frames]
      out.write(pcm(chunk))
      out.flush()
      frames += chunk.shape[1]
      pace(chunk.shape[1])
      if on_chunk is not None:
        on_chunk(frames)
      if limit is not None and frames >= limit:
        break
  except BrokenPipeError:
    logging.info('the reader closed the pipe after %d frames', frames)
  return frames


# ---------------------------------------------------------------------------------------------
# The HTTP server.


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>wavegen stream</title></head>
<body style="font-family: sans-serif">
<h1>wavegen: {title}</h1>
<audio id="player" src="/stream.wav" controls autoplay></audio>
<p>realtime factor <span id="rtf">?</span> &middot; listeners <span id="listeners">?</span>
of {max_listeners} &middot; <span id="behind"></span></p>
<script>
async function poll() {{
  try {{
    const s = await (await fetch('/status.json')).json();
    document.getElementById('rtf').textContent = s.realtime_factor.toFixed(2);
    document.getElementById('listeners').textContent = s.listeners;
    document.getElementById('behind').textContent =
        s.realtime_factor < 1 ? 'behind real time' : 'keeping up';
  }} catch (e) {{}}
  setTimeout(poll, 1000);
}}
poll();
</script>
</body></html>
"""


class Broadcast:
  """Runs the sampler in a thread while anyone listens and hands stream i's chunks to the
  listener holding stream i, through a queue of at most `buffer_chunks` chunks (the generator
  waits for the slowest listener rather than grow memory)."""

  def __init__(self, audio: Iterator[np.ndarray], streams: int, rate: int, max_listeners: int,
               buffer_chunks: int = 4, on_chunk=None):
    self.audio, self.rate, self.on_chunk = audio, rate, on_chunk
    self.max_listeners = min(max_listeners, streams)
    self.queues: dict[int, queue.Queue] = {}
    self.lock = threading.Lock()
    self.wake = threading.Event()
    self.buffer_chunks = buffer_chunks
    self.pace = Pace(rate)
    self.stopped = False
    self.thread = threading.Thread(target=self._run, daemon=True)
    self.thread.start()

  def join(self) -> int | None:
    """A free stream's number with its queue, or None when all are taken."""
    with self.lock:
      if len(self.queues) >= self.max_listeners:
        return None
      i = min(set(range(self.max_listeners)) - set(self.queues))
      self.queues[i] = queue.Queue(self.buffer_chunks)
      self.wake.set()
      return i

  def leave(self, i: int) -> None:
    with self.lock:
      self.queues.pop(i, None)

  def listeners(self) -> int:
    with self.lock:
      return len(self.queues)

  def _run(self) -> None:
    while not self.stopped:
      if not self.listeners():
        self.wake.wait(0.5)
        self.wake.clear()
        self.pace.restart()
        continue
      chunk = next(self.audio, None)
      if chunk is None:
        break
      self.pace(chunk.shape[1])
      if self.on_chunk is not None:
        self.on_chunk(self.pace.samples)
      with self.lock:
        targets = list(self.queues.items())
      for i, q in targets:
        while not self.stopped and i in self.queues:
          try:
            q.put(chunk[i], timeout=0.5)
            break
          except queue.Full:
            continue
    with self.lock:
      for q in self.queues.values():
        q.put(None)

  def stop(self, timeout: float = 60.) -> None:
    """Stops the sampler thread and waits for it (a process must not exit while a thread is
    inside a JAX computation)."""
    self.stopped = True
    self.wake.set()
    self.thread.join(timeout)


def make_server(broadcast: Broadcast, host: str, port: int, title: str
                ) -> http.server.ThreadingHTTPServer:
  """The HTTP server of the module docstring (not yet serving; port 0 picks a free one)."""
  page = PAGE.format(title=title, max_listeners=broadcast.max_listeners).encode()

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'  # the stream ends when the connection does

    def _send(self, status: int, body: bytes, kind: str) -> None:
      self.send_response(status)
      self.send_header('Content-Type', kind)
      self.send_header('Content-Length', str(len(body)))
      self.send_header('Cache-Control', 'no-store')
      self.end_headers()
      self.wfile.write(body)

    def do_GET(self):  # pylint: disable=invalid-name
      path = self.path.split('?', 1)[0]
      if path == '/':
        self._send(200, page, 'text/html; charset=utf-8')
      elif path == '/status.json':
        self._send(200, json.dumps({
            'realtime_factor': broadcast.pace.factor if broadcast.pace.samples else 0.,
            'listeners': broadcast.listeners(), 'max_listeners': broadcast.max_listeners,
            'seconds': broadcast.pace.samples / broadcast.rate}).encode(), 'application/json')
      elif path == '/stream.wav':
        self._stream()
      else:
        self._send(404, b'not found: this server has / and /stream.wav\n', 'text/plain')

    def _stream(self) -> None:
      i = broadcast.join()
      if i is None:
        self._send(503, f'all {broadcast.max_listeners} streams are taken; try again '
                   'later\n'.encode(), 'text/plain')
        return
      try:
        self.send_response(200)
        self.send_header('Content-Type', 'audio/wav')
        self.send_header('Cache-Control', 'no-store')
        self.end_headers()
        self.wfile.write(wav_header(broadcast.rate, 1))
        while (chunk := broadcast.queues[i].get()) is not None:
          self.wfile.write(pcm(chunk[None]))
      except (BrokenPipeError, ConnectionResetError):
        pass
      finally:
        broadcast.leave(i)
        logging.info('listener of stream %d left', i)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      logging.info('%s %s', self.address_string(), format % args)

  server = http.server.ThreadingHTTPServer((host, port), Handler)
  server.daemon_threads = True
  return server


# ---------------------------------------------------------------------------------------------
# The job.


def define_flags() -> None:
  """The job's flags, defined only when it runs as a program (see experiments/evaluate.py)."""
  flags.DEFINE_string('workdir', None, 'The autoregressive run to stream from.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_string('out', None, "A WAV file to grow, or '-' for stdout.")
  flags.DEFINE_enum('format', 'raw', ['raw', 'wav'], 'With --out=-: raw PCM or a streaming WAV.')
  flags.DEFINE_integer('port', None, 'Serve over HTTP on this port instead (0: any free one).')
  flags.DEFINE_string('state', None, 'Save the sampler state here after every chunk, and resume '
                      'from it when it exists: a restarted stream continues without a seam.')
  flags.DEFINE_string('host', '127.0.0.1', 'With --port: the address to bind.')
  flags.DEFINE_integer('streams', 1, 'Streams sampled together (channels, or listeners).')
  flags.DEFINE_integer('max_listeners', 4, 'With --port: listeners at once (<= --streams).')
  flags.DEFINE_integer('buffer_chunks', 4, 'With --port: chunks generated ahead of listeners.')
  flags.DEFINE_float('seconds', None, 'Stop after this much audio; default never.')
  flags.DEFINE_float('chunk_seconds', 0.5, 'Audio per sampler call and per write.')
  flags.DEFINE_float('temperature', 1.0, 'Sampling temperature.')
  flags.DEFINE_integer('seed', 0, 'PRNG seed.')
  flags.DEFINE_integer('global_id', None, 'The id of a globally conditioned model.')


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if f.workdir is None or (f.out is None) == (f.port is None):
    raise app.UsageError('--workdir and one of --out and --port are required')
  logging.set_verbosity(logging.INFO)
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # finish the file's header and go
  with runtime.one_line_errors('stream'):
    sample_lib.check_flags(f.seconds, f.temperature, None)
    config, model, variables, step = load(f.workdir, f.step)
    rate = specs.sample_rate(config.input)
    chunk = max(1, int(round(f.chunk_seconds * rate)))
    kwargs = dict(streams=f.streams, seed=f.seed, temperature=f.temperature,
                  chunk_samples=chunk, global_id=f.global_id)
    keep, resume, frames, on_chunk = {}, None, 0, None
    if f.state is not None:
      settings = _settings(config, step, f.streams, f.seed, f.temperature, f.global_id)
      if os.path.exists(f.state):
        list(chunks(config, model, variables, num_samples=0, keep=keep, **kwargs))
        resume, frames = load_state(f.state, keep['state'], settings)
        logging.info('resuming the stream of %s after %d frames', f.state, frames)
      on_chunk = lambda n: save_state(f.state, keep['state'], settings, n)
    audio = chunks(config, model, variables, resume=resume, keep=keep, **kwargs)
    title = f'{config.model_name} step {step}, {rate} Hz'
    logging.info('streaming %s from %s', title, f.workdir)
    try:
      if f.port is not None:
        serve(audio, f.streams, rate, f.host, f.port, f.max_listeners, f.buffer_chunks, title,
              on_chunk)
      elif f.out == '-':
        to_pipe(sys.stdout.buffer, audio, rate, f.streams, Pace(rate), f.format, f.seconds,
                on_chunk)
      else:
        try:
          to_file(f.out, audio, rate, f.streams, Pace(rate), f.seconds, frames, on_chunk)
        except sf.LibsndfileError as e:
          raise ValueError(f'--out={f.out}: cannot write there ({e})') from None
    except KeyboardInterrupt:
      logging.info('stopped')


def serve(audio, streams: int, rate: int, host: str, port: int, max_listeners: int,
          buffer_chunks: int, title: str, on_chunk=None) -> None:
  """Serves until interrupted (module docstring)."""
  if max_listeners < 1:
    raise ValueError(f'--max_listeners={max_listeners}: expected at least 1')
  broadcast = Broadcast(audio, streams, rate, max_listeners, buffer_chunks, on_chunk)
  try:
    server = make_server(broadcast, host, port, title)
  except OSError as e:
    raise ValueError(f'--host={host} --port={port}: cannot listen there ({e.strerror})') from None
  print(f'serving {title} on http://{host}:{server.server_address[1]}/ (streams: '
        f'{broadcast.max_listeners})', flush=True)
  try:
    server.serve_forever()
  finally:
    broadcast.stop()
    server.server_close()


if __name__ == '__main__':
  define_flags()
  app.run(main)
