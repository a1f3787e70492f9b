"""What every job shares around its work: flags, one-line errors, preemption, finite and
divergence checks, config checks, one job per directory.

    if __name__ == '__main__':
      config_flags.DEFINE_config_file('config', ...)   # flags belong to the program
      app.run(main, flags_parser=runtime.flags_parser('train'))

    def main(argv):
      with runtime.one_line_errors('train'):
        ...

A bad flag, config override or config value ends a job with one line `job: what is wrong`
(exit status 1), not a traceback; a bug still shows its traceback.
"""

from collections.abc import Callable
import contextlib
import fcntl
import math
import os
import signal
import socket

from absl import flags
from absl import logging
import jax
import numpy as np

# What bad input raises (AudioError and MidiError are ValueErrors).
INPUT_ERRORS = (FileNotFoundError, ValueError, FloatingPointError, TimeoutError)


@contextlib.contextmanager
def one_line_errors(job: str):
  """Turns INPUT_ERRORS into SystemExit('job: message')."""
  try:
    yield
  except INPUT_ERRORS as e:
    raise SystemExit(f'{job}: {e}') from None


def flags_parser(job: str) -> Callable[[list[str]], list[str]]:
  """absl's flag parsing, with a bad --config or --config.key reported in one line."""
  def parse(argv: list[str]) -> list[str]:
    try:
      return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
      cause = e
      while cause.args and isinstance(cause.args[0], Exception):  # ml_collections nests them
        cause = cause.args[0]
      lines = str(cause.args[0] if cause.args else cause).strip().splitlines()
      if len(lines) > 3:  # a config file's traceback: its last line says what went wrong
        lines = lines[-1:]
      raise SystemExit(f'{job}: {" ".join(" ".join(lines).split())}') from None
  return parse


def config_flag(job: str):
  """The --config flag's ConfigDict (None if not given); a config file that is missing or
  fails to load ends the job with one line (config_flags reports it only on first use)."""
  try:
    config = flags.FLAGS.config
    if config is not None:
      getattr(config, 'to_dict')  # a config that failed to load raises on any attribute
    return config
  except OSError as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    raise SystemExit(f'{job}: --config: {lines[-1] if lines else e}') from None


class Preemption:
  """Turns SIGTERM into a flag the loop checks after each step (all processes agree)."""

  def __init__(self):
    self.requested = False
    self._old = None
    if jax.process_count() == 1:
      try:
        self._old = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread (a notebook's worker): no handler
        self._old = None

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __call__(self, step: int) -> bool:
    if jax.process_count() > 1:  # jax.distributed's preemption notifier syncs the processes
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def close(self):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def check_finite(step: int, values: dict, max_consecutive_nonfinite: int, mngr) -> None:
  """Stops the run (before any save of this state) if a loss is NaN/Inf or updates have been
  non-finite `max_consecutive_nonfinite` times in a row; the last good checkpoint stays.

  `values`: host metrics; every key containing 'loss' is checked, and
  'nonfinite_consecutive' if present."""
  bad = [k for k, v in values.items() if 'loss' in k and not np.isfinite(v)]
  consecutive = values.get('nonfinite_consecutive', 0)
  if bad or consecutive >= max_consecutive_nonfinite:
    mngr.wait_until_finished()
    losses = ', '.join(f'{k} {values[k]}' for k in values if 'loss' in k)
    raise FloatingPointError(
        f'step {step}: {losses}, {consecutive:.0f} consecutive non-finite updates; stopped '
        f'with the last good checkpoint (step {mngr.latest_step()}) intact')


# ---------------------------------------------------------------------------------------------
# One job per directory.


class DirectoryBusy(ValueError):
  """Another live job holds the directory's lock; the message names it."""


@contextlib.contextmanager
def exclusive(directory: str, role: str, job: str):
  """Holds `directory`/.<role>.lock for the duration, on process 0 (one lock per run).

  The lock is an flock on an open file, so the kernel drops it when its job dies, however it
  dies: a lock file left by a killed job does not block a restart. The file names the holder
  (job, host, pid) for the one-line error a second job gets, and goes when the job ends.

  Raises:
    DirectoryBusy: a live job holds the lock.
    ValueError: `directory` is not a directory (e.g. a file).
  """
  if jax.process_index() != 0:
    yield
    return
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise ValueError(f'{directory}: not a directory (expected a workdir)')
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'.{role}.lock')
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 256).decode(errors='replace').strip() or 'another job'
      os.close(fd)
      raise DirectoryBusy(f'{directory} is in use by {holder}; wait for it to end, or use '
                          'another directory') from None
    try:
      if os.stat(path).st_ino == os.fstat(fd).st_ino:
        break
    except FileNotFoundError:
      pass
    os.close(fd)  # its holder removed the file as we opened it: take the new one
  try:
    os.ftruncate(fd, 0)
    os.write(fd, f'{job} (host {socket.gethostname()}, pid {os.getpid()})\n'.encode())
    yield
  finally:
    with contextlib.suppress(OSError):
      os.unlink(path)  # before the lock goes: a job that opened it meanwhile retries
    os.close(fd)


# ---------------------------------------------------------------------------------------------
# Config values the trainers cannot run with.


def check_run_config(config) -> None:
  """Raises ValueError naming the first key of `config` that no run can use."""
  checks = [('total_steps', config.total_steps >= 1, 'a positive number of steps'),
            ('log_every_steps', config.log_every_steps >= 1, 'a positive number of steps'),
            ('checkpoint.every_steps', config.checkpoint.every_steps >= 1,
             'a positive number of steps'),
            ('checkpoint.keep', config.checkpoint.keep >= 1, 'at least 1')]
  for name in ('optim', 'optim_discriminator'):
    if name in config:
      lr = config[name].learning_rate
      checks.append((f'{name}.learning_rate', lr >= 0 and math.isfinite(lr),
                     'a finite learning rate >= 0'))
  d = config.divergence
  checks += [('divergence.factor', d.factor == 0 or d.factor > 1, '0 (off) or above 1'),
             ('divergence.checks', d.checks >= 1, 'at least 1'),
             ('divergence.window', d.window >= 1, 'at least 1'),
             ('divergence.bits_margin', d.bits_margin >= 0, '>= 0 (0: off)')]
  for key, ok, expected in checks:
    if not ok:
      value = config
      for part in key.split('.'):
        value = value[part]
      raise ValueError(f'config.{key}={value}: expected {expected}')


class DivergenceGuard:
  """Stops a run whose loss has run away, before its last good checkpoint can rotate out.

  Each log step's metrics are one check. A check is bad when the 'loss' is above `factor`
  times the median of the last `window` good checks' losses (once 3 are known and their median
  is positive), or when 'bits_per_sample' is above the data's bits per code (input.bits, what
  a uniform guess scores; an input without bits, as events, has no such bound) plus
  `bits_margin`. While the last check is bad the trainer takes no
  checkpoint, so the newest one is the last taken before the trouble began; `checks` bad checks
  in a row stop the run with it intact (config.divergence; factor 0 and bits_margin 0 turn a
  rule off).
  """

  def __init__(self, divergence, bits: int | None):
    self.factor, self.checks = divergence.factor, divergence.checks
    self.window, self.bits_bound = divergence.window, (
        bits + divergence.bits_margin if divergence.bits_margin and bits else math.inf)
    self.good: list[float] = []
    self.bad = 0
    self.first_bad_step = None

  def reason(self, values: dict) -> str | None:
    """Why the check of `values` is bad, or None."""
    loss, bits = values.get('loss'), values.get('bits_per_sample')
    if bits is not None and bits > self.bits_bound:
      return f'bits_per_sample {bits:.4g} is above {self.bits_bound:g} (config.divergence.bits_margin)'
    if self.factor and loss is not None and len(self.good) >= 3:
      median = float(np.median(self.good[-self.window:]))
      if median > 0 and loss > self.factor * median:
        return (f'loss {loss:.4g} is above {self.factor:g} x its running median {median:.4g} '
                '(config.divergence.factor)')
    return None

  def __call__(self, step: int, values: dict, mngr) -> bool:
    """Checks the log step's `values`; True while the run is suspect (do not checkpoint).

    Raises:
      FloatingPointError: `checks` bad checks in a row.
    """
    why = self.reason(values)
    if why is None:
      self.bad = 0
      if 'loss' in values:
        self.good.append(values['loss'])
      return False
    self.bad += 1
    if self.bad == 1:
      self.first_bad_step = step
    if self.bad >= self.checks:
      mngr.wait_until_finished()
      raise FloatingPointError(
          f'step {step}: diverged: {why}, {self.bad} checks in a row since step '
          f'{self.first_bad_step}; stopped with the last good checkpoint (step '
          f'{mngr.latest_step()}) intact')
    logging.warning('step %d: %s (check %d of %d); no checkpoint until it recovers', step, why,
                    self.bad, self.checks)
    return True
