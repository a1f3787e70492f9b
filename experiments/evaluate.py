r"""Evaluates a run's checkpoints on a whole split with one of its evaluators (default: bits per
sample, against the entropy of the split's code marginal).

    python -m experiments.evaluate --workdir=/tmp/wn [--step=N] [--split=validation|test] \
        [--batch_size=8] [--crop_samples=N] [--eval=validation]
    python -m experiments.evaluate --workdir=/tmp/wn --follow [--poll_seconds=60]

--eval names an entry of the run's config.evals (experiments/evaluators/): its type and
settings, with --split, --batch_size and --crop_samples over them and no batch limit.

Without --step: the latest checkpoint that restores (a corrupt newer one is skipped with one
logged line). With --follow: every checkpoint not yet in the results
file, oldest first, as the trainer writes them, until the checkpoint of step
`config.total_steps` has been evaluated (--timeout_seconds stops a wait for a run that died).

One evaluation job per workdir and split (a lock, runtime.exclusive, beside the trainer's).
Each checkpoint's variables (experiments/state.VARIABLE_KEYS: never the optimiser state, so
its corruption cannot stop an evaluation) are restored onto the mesh of its saved config
(`config.mesh` over this job's devices, so a run trained on 8 devices evaluates on 1), sharded
as the model's logical axes say, from the checkpoint's own tree, so any trainer's checkpoints
evaluate.

What is measured, for the likelihood evaluator (experiments/evaluators/likelihood.py): every
segment of the split once, in order, each from silence; position 0 of a segment is context
only, so a split of segments of N_i samples counts sum(N_i - 1) predicted samples.
--crop_samples evaluates one random crop of each segment instead (seeded, the same crops every
time). Its baseline is the entropy of the split's code histogram: what a model that ignores
context scores. An evaluator's baseline is computed once per split and dataset and cached in
the results file.

Results, on process 0:
  workdir/eval_<split>.json     {'split', 'baseline': {'input', 'eval', 'values'},
                                 'steps': {'<key>': {'bits_per_sample', 'nll', 'samples',
                                                      'marginal_entropy_bits', ...}}}
                                replaced atomically (tmp + os.replace) after each checkpoint;
                                <key> is the step, with '/eval=<name>' and '/crop_samples=<N>'
                                where those differ from the defaults (`record_key`), so a
                                crop never replaces a whole-split result; an evaluation that
                                scores no sample is an error, not a record;
  workdir/tb/eval_<split>/      TensorBoard scalars '<split>/bits_per_sample', ... : a run beside
                                the trainer's, so the whole-split curve overlays its periodic one.
"""

import functools
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections

from data import specs
from experiments import checkpoint
from experiments import distributed
from experiments import evaluators
from experiments import metrics as metrics_lib
from experiments import runtime
from experiments import sharding
from experiments import state as state_lib
import models

# The input keys that decide which samples a split holds (baselines are cached per value).
_DATA_KEYS = ('dataset', 'manual_dir', 'data_dir', 'encoding', 'bits', 'kind', 'window')


def results_path(workdir: str, split: str) -> str:
  return os.path.join(workdir, f'eval_{split}.json')


def read_results(workdir: str, split: str) -> dict:
  """The results file of `split`, or an empty one."""
  path = results_path(workdir, split)
  if not os.path.exists(path):
    return {'split': split, 'baseline': None, 'steps': {}}
  with open(path, encoding='utf-8') as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: not a results file ({e}); move it away to start afresh') from None


def _write_json(path: str, data: dict) -> None:
  """Readers see the old file or the new one, never half of one."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(data, f, indent=1, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def baseline(evaluator, config: ml_collections.ConfigDict, name: str, split: str,
             results: dict) -> dict:
  """The evaluator's baseline figures, from `results` if computed for the same data and
  evaluator, else computed and stored into `results['baseline']` ({} without one)."""
  if not hasattr(evaluator, 'baseline'):
    return {}
  data = {k: config.input.get(k) for k in _DATA_KEYS}
  cached = results.get('baseline')
  if cached and cached['input'] == data and cached['eval'] == name:
    return cached['values']
  t = time.perf_counter()
  values = evaluator.baseline()
  logging.info('%s baseline: %s (%.1f s)', split, values, time.perf_counter() - t)
  results['baseline'] = {'input': data, 'eval': name, 'values': values}
  return values


@functools.lru_cache(maxsize=2)
def _setup(config_json: str, eval_name: str, split: str, batch_size: int,
           crop_samples: int | None) -> dict:
  """Mesh, the restore's shardings and the evaluator of a saved config (given as JSON, so that
  checkpoints of one run share one compiled evaluator)."""
  config = ml_collections.ConfigDict(json.loads(config_json))
  family, model = models.family(config.model_name), models.create(config)
  mesh, rules = sharding.make_mesh(config.mesh), sharding.rules(config)
  shardings = state_lib.variable_shardings(family, model, specs.zeros_batch(config.input, 1),
                                           mesh, rules)
  batch_sh = sharding.batch_sharding(mesh, rules)
  if eval_name not in config.evals:
    raise ValueError(f'--eval={eval_name}: the run\'s config.evals has '
                     f'{", ".join(config.evals) or "no evaluators"}')
  entry = config.evals[eval_name]
  overrides = {k: v for k, v in (('split', split), ('batch_size', batch_size),
                                 ('crop_samples', crop_samples), ('batches', None))
               if k in entry}
  context = evaluators.Context(config, family, model, mesh, rules, shardings, batch_sh)
  return {'mesh': mesh, 'sharding_of': state_lib.restore_shardings(shardings, mesh),
          'evaluator': evaluators.create(context, eval_name, entry, **overrides)}


def record_key(step: int, eval_name: str = 'validation', crop_samples: int | None = None) -> str:
  """A record's key in the results file: the step, and the settings that change what is
  measured, so that a crop evaluation never replaces the whole-split result of its step."""
  return str(step) + ('' if eval_name == 'validation' else f'/eval={eval_name}') + (
      '' if crop_samples is None else f'/crop_samples={crop_samples}')


def _restore(mngr, step: int, split: str, batch_size: int | None, crop_samples: int | None,
             eval_name: str):
  """(saved config, _setup's dict, the checkpoint's variables on its mesh) of `step`; reads
  nothing of the state but state.VARIABLE_KEYS."""
  config = checkpoint.saved_config(mngr, step)
  batch_size = batch_size or config.evals.get(eval_name, {}).get('batch_size')
  s = _setup(config.to_json(), eval_name, split, batch_size, crop_samples)
  with jax.set_mesh(s['mesh']):
    abstract = checkpoint.saved_abstract(mngr, step, s['sharding_of'])
    state = checkpoint.restore(mngr, step, {k: v for k, v in abstract.items()
                                            if k in state_lib.VARIABLE_KEYS}, partial=True)
  return config, s, state, batch_size


def _evaluate_step(workdir: str, step: int, restored, split: str, crop_samples: int | None,
                   writer, eval_name: str = 'validation') -> dict:
  """Evaluates one restored checkpoint (`_restore`'s), records it in the results file and
  TensorBoard; returns the record."""
  t = time.perf_counter()
  config, s, state, batch_size = restored
  with jax.set_mesh(s['mesh']):
    metrics = s['evaluator'].run(state)
  del state
  if metrics.get('samples', 1) == 0:
    raise ValueError(f'step {step}: the {split} evaluation scored 0 samples'
                     + (f' (--crop_samples={crop_samples}: position 0 of a crop is context '
                        'only)' if crop_samples is not None else '') + '; nothing recorded')
  clips = {k: v for k, v in metrics.items() if isinstance(v, metrics_lib.Audio)}
  metrics = {k: v for k, v in metrics.items() if k not in clips}
  results = read_results(workdir, split)
  record = dict(metrics, step=step, split=split, eval=eval_name, batch_size=batch_size,
                crop_samples=crop_samples, total_steps=config.total_steps,
                **baseline(s['evaluator'], config, eval_name, split, results),
                wall_s=time.perf_counter() - t)
  logging.info('step %d %s: %s, %.1f s', step, split, ' '.join(
      f'{k}={v:.4f}' for k, v in record.items() if k in metrics or k.endswith('_bits')),
               record['wall_s'])
  if jax.process_index() == 0:
    if hasattr(s['evaluator'], 'report'):  # e.g. the translation evaluator's tables
      print(s['evaluator'].report(record), flush=True)
    results['steps'][record_key(step, eval_name, crop_samples)] = record
    _write_json(results_path(workdir, split), results)
    writer.scalars(step, {f'{split}/{k}': v for k, v in record.items()
                          if isinstance(v, (int, float)) and k not in (
                              'step', 'batch_size', 'crop_samples', 'total_steps', 'wall_s')})
    writer.write(step, f'{split}/{eval_name}', clips)  # audio clips: TensorBoard only
  return record


def _writer(workdir: str, split: str) -> metrics_lib.Writer:
  return metrics_lib.Writer(os.path.join(workdir, 'tb', f'eval_{split}'))


def evaluate_checkpoint(workdir: str, step: int | None = None, split: str = 'validation',
                        batch_size: int | None = None, crop_samples: int | None = None,
                        eval_name: str = 'validation') -> dict:
  """Evaluates one checkpoint of `workdir` (default the latest) on the whole of `split`.

  Args:
    workdir: the training run's directory.
    step: the checkpoint; None: the latest.
    split: 'train', 'validation' or 'test'.
    batch_size: global eval batch; None: the evaluator's in the saved config.
    crop_samples: None: whole segments; else one crop of each segment.
    eval_name: the entry of the saved config.evals to run.

  Returns:
    the evaluator's figures (likelihood: 'nll' (nats), 'bits_per_sample', 'samples') with
    'step', its baseline ('marginal_entropy_bits'), ..., also
    written to the results file and TensorBoard (module docstring).

  Raises:
    FileNotFoundError: no checkpoint (at `step`) in the workdir.
  """
  _check_crop(crop_samples)
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f'{workdir}: no such workdir')
  with _lock(workdir, split), checkpoint.manager(workdir, read_only=True) as mngr:
    if not mngr.all_steps():
      raise FileNotFoundError(f'{checkpoint.directory(workdir)}: no checkpoint to evaluate '
                              '(train first, or use --follow to wait for one)')
    step, restored, _ = checkpoint.newest_that_restores(
        mngr, workdir, lambda s: _restore(mngr, s, split, batch_size, crop_samples, eval_name),
        step)
    writer = _writer(workdir, split)
    try:
      return _evaluate_step(workdir, step, restored, split, crop_samples, writer, eval_name)
    finally:
      writer.close()


def _lock(workdir: str, split: str):
  """One evaluation job per workdir and split (the writer of its results file)."""
  return runtime.exclusive(workdir, f'evaluate_{split}', f'an evaluation of {split}')


def _check_crop(crop_samples: int | None) -> None:
  if crop_samples is not None and crop_samples < 2:
    raise ValueError(f'--crop_samples={crop_samples}: expected at least 2 (position 0 of a '
                     'crop is context only, so shorter crops score no sample)')


def _agree(value: int) -> int:
  """Process 0's `value` on every process (their directory listings may differ for a moment)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(multihost_utils.broadcast_one_to_all(value))


def _finished(records: dict) -> bool:
  return any(s >= r['total_steps'] for s, r in records.items())


def follow(workdir: str, split: str = 'validation', batch_size: int | None = None,
           crop_samples: int | None = None, poll_seconds: float = 60.,
           timeout_seconds: float | None = None, eval_name: str = 'validation') -> dict:
  """Evaluates each checkpoint of `workdir` not yet in its results file, as it appears, until
  the checkpoint of step config.total_steps is evaluated; returns {step: record} of this call.

  A checkpoint deleted by the trainer's retention before its turn, or one that does not
restore, is skipped with a warning.

  Raises:
    TimeoutError: no new checkpoint for `timeout_seconds` (None: wait forever).
  """
  _check_crop(crop_samples)
  saved = read_results(workdir, split)['steps']  # {record_key: record}, of any settings
  steps = {int(k.split('/')[0]) for k in saved}
  done = {s: saved[record_key(s, eval_name, crop_samples)] for s in steps
          if record_key(s, eval_name, crop_samples) in saved}  # {step: record} of these settings
  new = {}
  writer = _writer(workdir, split)
  last_progress = time.monotonic()
  with _lock(workdir, split), checkpoint.manager(workdir, read_only=True) as mngr:
    try:
      while not _finished(done):
        mngr.reload()
        pending = sorted(s for s in mngr.all_steps() if s not in done)
        step = _agree(pending[0] if pending else -1)
        if step < 0:
          waited = time.monotonic() - last_progress
          if _agree(int(timeout_seconds is not None and waited > timeout_seconds)):
            raise TimeoutError(f'{checkpoint.directory(workdir)}: no new checkpoint for '
                               f'{waited:.0f} s (--timeout_seconds={timeout_seconds}); '
                               f'evaluated {sorted(done)}')
          time.sleep(poll_seconds)
          continue
        try:
          restored = _restore(mngr, step, split, batch_size, crop_samples, eval_name)
        except Exception as e:  # pylint: disable=broad-except  (Orbax's errors vary)
          mngr.reload()
          why = ('it was deleted before it was evaluated' if step not in mngr.all_steps() else
                 f'it does not restore ({checkpoint.one_line_fault(e)})')
          logging.warning('checkpoint %d skipped: %s', step, why)
          record = {'skipped': why, 'total_steps': float('inf')}
        else:
          record = _evaluate_step(workdir, step, restored, split, crop_samples, writer,
                                  eval_name)
        done[step] = new[step] = record
        last_progress = time.monotonic()
    finally:
      writer.close()
  return new


def define_flags() -> None:
  """The job's flags, defined only when it runs as a program: imported as a library (tests,
  notebooks, other jobs) it must not claim flag names."""
  flags.DEFINE_string('workdir', None, 'The training run to evaluate.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_enum('split', 'validation', ['train', 'validation', 'test'], 'Split.')
  flags.DEFINE_integer('batch_size', None, "Global batch; default the evaluator's.")
  flags.DEFINE_integer('crop_samples', None, 'Evaluate one crop of each segment; default whole '
                       'segments.')
  flags.DEFINE_bool('follow', False, 'Evaluate each new checkpoint until the last.')
  flags.DEFINE_float('poll_seconds', 60., 'With --follow: seconds between looks.')
  flags.DEFINE_string('eval', 'validation', 'The entry of the run\'s config.evals to run.')
  flags.DEFINE_float('timeout_seconds', None, 'With --follow: give up after this long without a '
                     'new checkpoint; default never.')


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if f.workdir is None:
    raise app.UsageError('--workdir is required')
  if f.follow and f.step is not None:
    raise app.UsageError('--follow evaluates every checkpoint: leave out --step')
  logging.set_verbosity(logging.INFO)
  with runtime.one_line_errors('evaluate'):
    distributed.initialize()
    if f.follow:
      follow(f.workdir, f.split, f.batch_size, f.crop_samples, f.poll_seconds, f.timeout_seconds,
             f.eval)
    else:
      evaluate_checkpoint(f.workdir, f.step, f.split, f.batch_size, f.crop_samples, f.eval)
  distributed.shutdown()


if __name__ == '__main__':
  define_flags()
  app.run(main)
