"""What every job shares around its work: flags, one-line errors, preemption, finite checks.

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
import signal

from absl import flags
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
