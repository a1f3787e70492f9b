"""Orbax checkpoints of a run: train state, data iterator position and config, under the workdir.

    workdir/checkpoints/<step>/{state, data, config}

A checkpoint holds `state` (the train state dict, restored into whatever shardings the caller
asks for, so that a run saved on 8 devices resumes on 1), `data` (each process's grain iterator
state; restored only by a run of as many processes, see `restore`) and `config` (JSON). Saves
are asynchronous, and every process takes part; a checkpoint appears only once complete, so a
run killed mid-save resumes from the previous one. Kept: the last `config.checkpoint.keep`
and every `keep_every`-th step.

Where a run starts, in order: (1) the workdir's latest checkpoint, (2) `config.resume` (another
run's workdir: its latest state and data position), (3) `config.init_from` (another workdir:
parameters only),
(4) scratch. The trainer implements the order; this module does the reading and writing.
"""

import json
import os

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def manager(workdir: str, config: ml_collections.ConfigDict | None = None,
            read_only: bool = False) -> ocp.CheckpointManager:
  """The run's CheckpointManager; `config.checkpoint` sets retention and async saving."""
  c = config.checkpoint if config is not None else None
  options = ocp.CheckpointManagerOptions(
      max_to_keep=c.keep if c else None,
      keep_period=(c.keep_every or None) if c else None,
      enable_async_checkpointing=c.async_save if c else False,
      create=not read_only, read_only=read_only)
  return ocp.CheckpointManager(directory(workdir), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: dict, batches,
         config: ml_collections.ConfigDict) -> None:
  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=grain.checkpoint.CheckpointSave(batches),
      config=ocp.args.JsonSave(json.loads(config.to_json_best_effort()))), force=True)


def saved_config(mngr: ocp.CheckpointManager, step: int) -> ml_collections.ConfigDict:
  out = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return ml_collections.ConfigDict(out['config'])


def check_compatible(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     where: str) -> None:
  """Raises ValueError if `where` holds a checkpoint of a different model than `config`'s."""
  if saved.model_name != config.model_name:
    raise ValueError(f'{where} holds a checkpoint of model {saved.model_name!r}; the config '
                     f'trains {config.model_name!r} (use another workdir)')
  old, new = saved.model.to_dict(), json.loads(config.model.to_json_best_effort())
  diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  if diff:
    detail = ', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in diff)
    raise ValueError(f'{where} holds a checkpoint of a different {config.model_name} '
                     f'(config.model {detail}); use another workdir')


def data_processes(mngr: ocp.CheckpointManager, step: int) -> int | None:
  """How many processes wrote the data iterator states of `step` (None: no data item)."""
  path = os.path.join(str(mngr.directory), str(step), 'data')
  names = os.listdir(path) if os.path.isdir(path) else []
  counts = {int(n.rsplit('-of-', 1)[1].split('.')[0]) for n in names if '-of-' in n}
  return counts.pop() if len(counts) == 1 else None


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: dict,
            batches=None) -> dict:
  """The state at `step`, laid out as `abstract_state` (ShapeDtypeStructs with shardings); the
  data iterator `batches`, if given, is moved to the saved position.

  Each process saves its own iterator state, so a checkpoint written by N processes restores
  the data position only in a run of N processes. In a run of another size the state is
  restored and the data iterator starts afresh from its seed, with a warning.
  """
  items = {'state': ocp.args.StandardRestore(abstract_state)}
  if batches is not None:
    saved = data_processes(mngr, step)
    if saved == jax.process_count():
      items['data'] = grain.checkpoint.CheckpointRestore(batches)
    else:
      logging.warning('checkpoint %d holds the data positions of %s processes, this run has %d: '
                      'the state is restored, the data iterator starts afresh', step, saved,
                      jax.process_count())
  return mngr.restore(step, args=ocp.args.Composite(**items))['state']


def load(workdir: str, step: int | None = None) -> tuple[dict, ml_collections.ConfigDict]:
  """(state as numpy arrays on this host, config) of a run's checkpoint; default the latest.

  For notebooks and tools: needs no mesh, and runs on any number of devices.
  """
  from experiments import train  # pylint: disable=g-import-not-at-top  (train imports us)
  with manager(workdir, read_only=True) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{directory(workdir)} holds no checkpoint')
    if step not in mngr.all_steps():
      raise FileNotFoundError(f'{directory(workdir)} has no step {step}; it has '
                              f'{sorted(mngr.all_steps())}')
    config = saved_config(mngr, step)
    model = train.create_model(config)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            train.abstract_state(config, model))
    state = restore(mngr, step, abstract)
  return jax.tree.map(np.asarray, state), config
