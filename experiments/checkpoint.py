"""Orbax checkpoints of a run: train state, data iterator position and config, under the workdir.

    workdir/checkpoints/<step>/{state, data, config}

A checkpoint holds `state` (the train state dict, restored into whatever shardings the caller
asks for, so that a run saved on 8 devices resumes on 1), `data` (each process's grain iterator
state; restored only by a run of as many processes, see `restore`) and `config` (JSON). Saves
are asynchronous, and every process takes part; a checkpoint appears only once complete, so a
run killed mid-save resumes from the previous one. Kept: the last `config.checkpoint.keep`
and every `keep_every`-th step.

A checkpoint that does not restore (a truncated array file, a missing `_METADATA`, a garbage
config, an empty step directory) is skipped with one logged line naming its step and fault, and
the next older one is tried (`newest_that_restores`); the trainer moves skipped ones to
workdir/unrestorable_checkpoints/ so that its next saves cannot collide with them.

Where a run starts (`restore_or_init`), in order: (1) the workdir's latest checkpoint, (2)
`config.resume` (another run's workdir: its latest state and data position), (3)
`config.init_from` (another workdir: its parameters, in a fresh state), (4) scratch.

`load(workdir)` reads any run's checkpoint as host arrays with its config, whatever the family
or trainer that wrote it: the tree comes from the checkpoint's own metadata, not from a model;
`keys` restores only some entries of the state (evaluation and sampling read the variables,
never the optimiser state, so its corruption cannot stop them).
"""

from collections.abc import Callable
import json
import os
import shutil

from absl import logging
from etils import epath
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


class IncompatibleCheckpoint(ValueError):
  """A checkpoint that restores but is of another model or run setting than the config's."""


def check_compatible(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     where: str) -> None:
  """Raises IncompatibleCheckpoint if `where` holds a checkpoint of a different model than
  `config`'s, or of another batch size (a resumed data position assumes the saved one)."""
  if saved.model_name != config.model_name:
    raise IncompatibleCheckpoint(f'{where} holds a checkpoint of model {saved.model_name!r}; the config '
                     f'trains {config.model_name!r} (use another workdir)')
  old, new = saved.model.to_dict(), json.loads(config.model.to_json_best_effort())
  diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  if diff:
    detail = ', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in diff)
    raise IncompatibleCheckpoint(f'{where} holds a checkpoint of a different '
                                 f'{config.model_name} (config.model {detail}); use another '
                                 'workdir')
  before, now = saved.get('input', {}).get('batch_size'), config.input.batch_size
  if before is not None and before != now:
    raise IncompatibleCheckpoint(
        f'config.input.batch_size={now}: {where} was trained with input.batch_size={before}, '
        'and a resume keeps it (or start a new workdir with config.init_from)')


def data_processes(mngr: ocp.CheckpointManager, step: int) -> int | None:
  """How many processes wrote the data iterator states of `step` (None: no data item)."""
  path = os.path.join(str(mngr.directory), str(step), 'data')
  names = os.listdir(path) if os.path.isdir(path) else []
  counts = {int(n.rsplit('-of-', 1)[1].split('.')[0]) for n in names if '-of-' in n}
  return counts.pop() if len(counts) == 1 else None


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: dict,
            batches=None, partial: bool = False) -> dict:
  """The state at `step`, laid out as `abstract_state` (ShapeDtypeStructs with shardings); the
  data iterator `batches`, if given, is moved to the saved position. `partial`: restore only the
  entries `abstract_state` holds (a subtree of the saved state), reading nothing else.

  Each process saves its own iterator state, so a checkpoint written by N processes restores
  the data position only in a run of N processes. In a run of another size the state is
  restored and the data iterator starts afresh from its seed, with a warning.
  """
  if partial:
    items = {'state': ocp.args.PyTreeRestore(
        item=abstract_state, partial_restore=True, restore_args=jax.tree.map(
            lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), abstract_state))}
  else:
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


def restore_or_init(mngr: ocp.CheckpointManager, config: ml_collections.ConfigDict,
                    workdir: str, abstract_state: dict, init: Callable[[], dict],
                    batches=None) -> tuple[dict, str]:
  """The run's first state, in the resume order of the module docstring; (state, how).

  Args:
    mngr: the workdir's manager.
    config: the run's config (checked against any checkpoint it resumes from).
    abstract_state: the state's sharded ShapeDtypeStructs (the restore target).
    init: returns a fresh state (from config.seed), laid out as `abstract_state`.
    batches: the data iterator, moved to the saved position where the source has one.
  """
  if mngr.latest_step() is not None:
    def attempt(step):
      check_compatible(saved_config(mngr, step), config, f'workdir {workdir}')
      return restore(mngr, step, abstract_state, batches)
    step, state, skipped = newest_that_restores(mngr, workdir, attempt)
    _set_aside(mngr, workdir, skipped)
    return state, f'resumed from step {step}'
  for key, with_data in (('resume', True), ('init_from', False)):
    if not config[key]:
      continue
    with manager(config[key], read_only=True) as src:
      s = src.latest_step()
      if s is None:
        raise FileNotFoundError(f'config.{key}={config[key]}: no checkpoint in '
                                f'{directory(config[key])}')
      check_compatible(saved_config(src, s), config, f'config.{key}={config[key]}')
      state = restore(src, s, abstract_state, batches if with_data else None)
    if with_data:
      return state, f'resumed from {config[key]} step {s}'
    return dict(init(), params=state['params']), f'parameters from {config[key]} step {s}'
  return init(), 'from scratch'


def one_line_fault(e: Exception) -> str:
  """An exception as one short line (Orbax and TensorStore errors run to many)."""
  lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
  text = lines[0] if lines else ''
  return f'{type(e).__name__}: {text[:240]}' if text else type(e).__name__


def newest_that_restores(mngr: ocp.CheckpointManager, workdir: str,
                         attempt: Callable[[int], object], step: int | None = None):
  """(step, attempt(step), skipped steps) of the newest checkpoint whose `attempt` succeeds.

  Each checkpoint that fails is logged in one line (its step and fault) and the next older one
  is tried. An explicit `step` is tried alone. IncompatibleCheckpoint is never skipped.

  Raises:
    FileNotFoundError: no checkpoint, or no checkpoint of `step` (naming those there).
    ValueError: no checkpoint restores (each step with its fault), or `step` does not.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    raise FileNotFoundError(f'{directory(workdir)} holds no checkpoint')
  if step is not None:
    if step not in steps:
      raise FileNotFoundError(f'{directory(workdir)}: no checkpoint of step {step}; it has '
                              f'steps {steps[::-1]}')
    steps = [step]
  faults = {}
  for s in steps:
    try:
      return s, attempt(s), sorted(faults)
    except IncompatibleCheckpoint:
      raise
    except Exception as e:  # pylint: disable=broad-except  (Orbax/TensorStore errors vary)
      faults[s] = one_line_fault(e)
      if step is None:
        logging.warning('checkpoint %d in %s does not restore, skipped: %s', s,
                        directory(workdir), faults[s])
  raise ValueError(f'{directory(workdir)}: ' + (
      f'checkpoint {step} does not restore ({faults[step]})' if step is not None else
      'no checkpoint restores (' + '; '.join(f'step {s}: {f}' for s, f in faults.items()) + ')'))


def _set_aside(mngr: ocp.CheckpointManager, workdir: str, steps: list[int]) -> None:
  """Moves unrestorable checkpoints to workdir/unrestorable_checkpoints/ (kept for a look, out
  of the way of the steps the run will save again)."""
  if not steps:
    return
  if jax.process_index() == 0:
    aside = os.path.join(os.path.abspath(workdir), 'unrestorable_checkpoints')
    os.makedirs(aside, exist_ok=True)
    for s in steps:
      target = os.path.join(aside, str(s))
      shutil.rmtree(target, ignore_errors=True)
      os.replace(os.path.join(directory(workdir), str(s)), target)
      logging.warning('moved the unrestorable checkpoint %d to %s', s, target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('checkpoint._set_aside')
  mngr.reload()


def saved_abstract(mngr: ocp.CheckpointManager, step: int,
                   sharding_of: Callable[[tuple], jax.sharding.Sharding]):
  """The saved state's tree as ShapeDtypeStructs from the checkpoint's metadata, each laid
  out as sharding_of(its key path): a restore target that needs no model."""
  # Read by the state's handler itself: a manager learns its items' handlers only from a save
  # or restore, so a fresh one reports no metadata for them.
  path = epath.Path(str(mngr.directory)) / str(step) / 'state'
  tree = ocp.StandardCheckpointHandler().metadata(path).tree
  return jax.tree_util.tree_map_with_path(
      lambda path, m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding_of(path)),
      tree, is_leaf=lambda m: hasattr(m, 'shape') and hasattr(m, 'dtype'))


def load(workdir: str, step: int | None = None,
         keys: tuple[str, ...] | None = None) -> tuple[dict, ml_collections.ConfigDict]:
  """(state as numpy arrays on this host, config) of a run's checkpoint: `step`, or the newest
  that restores; only the state's entries `keys` (those it has), if given.

  For notebooks and tools: needs no mesh and no model, and runs on any number of devices.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def attempt(s):
    config = saved_config(mngr, s)
    abstract = saved_abstract(mngr, s, lambda path: device)
    if keys is not None:
      abstract = {k: v for k, v in abstract.items() if k in keys}
    return restore(mngr, s, abstract, partial=keys is not None), config

  with manager(workdir, read_only=True) as mngr:
    _, (state, config), _ = newest_that_restores(mngr, workdir, attempt, step)
  return jax.tree.map(np.asarray, state), config
