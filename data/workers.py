"""The processes of a dataset preparation (data/maestro.py): its worker pool, its lock, and its
response to SIGTERM.

    with exit_on_sigterm(), file_lock(data_dir + '/.prepare.lock'):
      pool = ProcessPoolExecutor(n, initializer=die_with_parent, initargs=(os.getpid(),))
      ...                       # on an error: kill_workers(pool) before the pool shuts down
"""

import concurrent.futures
import contextlib
import ctypes
import fcntl
import os
import signal
import threading

from absl import logging


class SerialPool:
  """The executor interface, run in this process (num_workers <= 1)."""

  def submit(self, fn, *args):
    fut = concurrent.futures.Future()
    fut.set_result(fn(*args))
    return fut

  def shutdown(self, **unused_kwargs):
    pass


def die_with_parent(parent: int) -> None:
  """Pool initializer: the worker is killed when the preparing process dies, even by SIGKILL.

  Linux's prctl(PR_SET_PDEATHSIG); elsewhere nothing (workers then exit when they next find the
  pool's pipes closed).
  """
  try:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return
  if prctl(1, signal.SIGKILL) == 0 and os.getppid() != parent:  # 1 = PR_SET_PDEATHSIG
    os._exit(1)  # the parent died before prctl took effect


def kill_workers(pool) -> None:
  """Kills a process pool's workers now (an interrupted preparation does not wait for them)."""
  for process in list((getattr(pool, '_processes', None) or {}).values()):
    with contextlib.suppress(OSError, ValueError):
      process.kill()


@contextlib.contextmanager
def file_lock(path: str):
  """An exclusive lock on `path`: concurrent jobs on one machine prepare once."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    yield


class Terminated(BaseException):
  """SIGTERM arrived while preparing (a BaseException: no `except Exception` swallows it)."""


@contextlib.contextmanager
def exit_on_sigterm():
  """On SIGTERM, unwind (TFDS removes its temporary directory, the workers are killed) and exit 0.

  Only in the main thread (the only one that can take signals); the previous handler comes back
  afterwards.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, frame):
    del signum, frame
    raise Terminated()

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  except Terminated:
    logging.warning('SIGTERM: stopped preparing the dataset and removed what it had written')
    raise SystemExit(0) from None
  finally:
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
