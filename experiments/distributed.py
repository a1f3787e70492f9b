"""Multi-process start-up and shutdown for every job (train, evaluate, sample, benchmark).

JAX's multi-controller runtime: one process per host (or per GPU), each running the same
program on its own devices, together forming one global device set; `jax.distributed` connects
them. A job calls `initialize()` first thing in main and `shutdown()` last. A run is
multi-process when the environment says so:

  * JAX_COORDINATOR_ADDRESS=host:port with JAX_NUM_PROCESSES and JAX_PROCESS_ID: a plain
    coordinator (launch/local.sh sets these for N processes on loopback);
  * SLURM with more than one task (SLURM_NTASKS > 1; launch/slurm.sbatch), Open MPI
    (OMPI_COMM_WORLD_SIZE > 1), or WAVEGEN_DISTRIBUTED=auto (a Cloud TPU VM slice:
    launch/tpu_pod.sh): JAX's own cluster detection fills in every parameter.

WAVEGEN_DISTRIBUTED=off forces a single process. On CPU the cross-process collectives use gloo.
A process that dies is noticed by the others through the coordination service's heartbeats:
after WAVEGEN_HEARTBEAT_SECONDS (default 30) without one, every other process stops with an
error instead of waiting forever in a collective.
"""

import os

from absl import logging
import jax

_HEARTBEAT_SECONDS = 30


def requested() -> bool:
  """Whether the environment asks for a multi-process run."""
  env = os.environ
  mode = env.get('WAVEGEN_DISTRIBUTED', '').lower()
  if mode in ('off', '0', 'false', 'no'):
    return False
  if mode in ('auto', 'on', '1', 'true', 'yes'):
    return True
  if mode:
    raise ValueError(f'WAVEGEN_DISTRIBUTED={env["WAVEGEN_DISTRIBUTED"]!r}: expected auto or off')
  if env.get('JAX_COORDINATOR_ADDRESS'):
    return True
  for key in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
    if int(env.get(key, '1') or '1') > 1:
      return True
  return False


def _env_int(key: str) -> int | None:
  value = os.environ.get(key)
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'{key}={value!r}: expected an integer') from None


def initialize() -> None:
  """Joins the multi-process run the environment describes; a no-op for a single process.

  Raises:
    ValueError: the environment names a coordinator but not the process count and index.
  """
  if not requested():
    return
  # Must be set before the CPU backend starts; other backends ignore it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  kwargs = {'heartbeat_timeout_seconds': _env_int('WAVEGEN_HEARTBEAT_SECONDS') or
                                         _HEARTBEAT_SECONDS}
  address = os.environ.get('JAX_COORDINATOR_ADDRESS')
  num, index = _env_int('JAX_NUM_PROCESSES'), _env_int('JAX_PROCESS_ID')
  if address and not os.environ.get('SLURM_JOB_ID') and (num is None or index is None):
    raise ValueError(f'JAX_COORDINATOR_ADDRESS={address}: also set JAX_NUM_PROCESSES and '
                     'JAX_PROCESS_ID (or launch with launch/local.sh)')
  if num is not None and index is not None:
    kwargs.update(coordinator_address=address, num_processes=num, process_id=index)
  timeout = _env_int('WAVEGEN_INIT_TIMEOUT_SECONDS')
  if timeout:
    kwargs['initialization_timeout'] = timeout
  jax.distributed.initialize(**kwargs)
  if jax.process_index() != 0:  # one process speaks; the others only warn
    logging.set_verbosity(logging.WARNING)
  logging.info('process %d of %d: %d local devices of %d (%s)', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)


def is_main() -> bool:
  """Whether this process writes logs, TensorBoard, results and audio."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process reaches this point (a no-op for one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def shutdown() -> None:
  """Leaves the run cleanly: all processes meet, then disconnect from the coordinator."""
  if jax.process_count() > 1:
    sync('shutdown')
    jax.distributed.shutdown()
