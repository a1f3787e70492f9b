r"""Trains a model family by its own loss: `train_and_evaluate(config, workdir)`.

    python -m experiments.train --config=experiments/configs/wavenet.py:runlocal --workdir=/tmp/wn \
        [--config.total_steps=1000 --config.seed=1 ...]

One loop for every family trained by one optimiser on its `loss` (models/__init__.py: the
family turns a batch into its loss and metrics; this file never slices a batch). Training
games of other shapes (GANs: experiments/train_gan.py; distillation) write their own state and
step (`init_fn`, `make_step`) and run this loop with them (`train_and_evaluate(..., game=)`;
experiments/train_distill.py keeps this step and loads a frozen teacher into the state),
on the shared pieces:

    models.create / models.family       the model and its family module
    experiments/state.py                the state from an init_fn, abstract, sharded, created
    experiments/optim.py                the optimiser, gradient accumulation
    experiments/checkpoint.py           Orbax saves, restore_or_init, load
    experiments/runtime.py              flags, one-line errors, preemption, finite checks
    experiments/evaluators/             config.evals by name
    data/inputs.py                      global batches (of audio: data/pipeline.py; of events:
                                        data/events_pipeline.py); data/specs.py their shapes

Start-up: the mesh of `config.mesh`; the state {'step', 'params', 'opt_state'[,
'model_state']} built already sharded, then resumed as experiments/checkpoint.py describes.
Each step gets the key fold_in(step key, step) (experiments/state.py) and is jitted with the
state donated. Every `log_every_steps` the metrics come to the host, are checked for NaN/Inf
and for divergence (runtime.DivergenceGuard: no checkpoint while the loss looks diverged, and
the run stops with its last good checkpoint intact if it stays so) and written to TensorBoard
under workdir/tb; the evaluators of `config.evals` run on their schedules, their batch sizes
checked against the mesh before the first step. One trainer per workdir (a lock,
runtime.exclusive); config values no run can use (runtime.check_run_config) fail at start.
On SIGTERM the current step finishes, a checkpoint is written and waited for, and
train_and_evaluate returns (exit 0).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax

from data import inputs
from data import pipeline
from data import specs
from experiments import checkpoint
from experiments import distributed
from experiments import evaluators
from experiments import metrics as metrics_lib
from experiments import optim
from experiments import runtime
from experiments import sharding
from experiments import state as state_lib
import models


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optim.make(config.optim, config.total_steps)


def init_fn(config: ml_collections.ConfigDict, family, model: nn.Module):
  """The train state's init_fn (experiments/state.py) of `config`, on a dummy batch of 1."""
  return state_lib.train_init(family, model, make_optimizer(config),
                              specs.zeros_batch(config.input, batch_size=1))


def make_step(config, family, model, rules, state_shardings, batch_shardings):
  """The game's jitted step `(state, batch) -> (state, metrics)` (make_train_step's here)."""
  return make_train_step(config, family, model, make_optimizer(config), rules, state_shardings,
                         batch_shardings)


def make_train_step(config, family, model, tx, rules, state_shardings, batch_shardings):
  """The jitted step: the family's loss and gradients (accumulated over `config.microbatches`
  slices of the batch, each spread over the data axis like the whole), the optax update, the
  family's metrics."""
  n = config.microbatches
  if n < 1 or config.input.batch_size % n:
    raise ValueError(f'config.microbatches={n}: expected a divisor of input.batch_size='
                     f'{config.input.batch_size}')
  try:  # each microbatch must spread over processes and data devices like a whole batch
    pipeline.batch_shards(config.input.batch_size // n, batch_shardings)
  except ValueError as e:
    raise ValueError(f'config.microbatches={n}: microbatches of {config.input.batch_size // n} '
                     f'rows do not divide ({e})') from None

  def loss_fn(params, model_state, batch, rng):
    loss, metrics, model_state = family.loss(model, {'params': params, **model_state}, batch,
                                             rng)
    return loss, (metrics, model_state)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, batch):
    rng = state_lib.step_key(config.seed, state['step'])
    with nn.logical_axis_rules(rules):
      (loss, (metrics, model_state)), grads = optim.accumulate(
          grad_fn, state['params'], state.get('model_state', {}), batch, n, rng)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    consecutive, total = optim.nonfinite_count(opt_state)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   nonfinite_consecutive=consecutive, nonfinite_total=total)
    new = {'step': state['step'] + 1, 'params': params, 'opt_state': opt_state}
    if model_state:
      new['model_state'] = model_state
    return new, metrics

  return jax.jit(train_step, in_shardings=(state_shardings, batch_shardings),
                 out_shardings=(state_shardings, None), donate_argnums=(0,))


def _log(step, config, history, progress, writer, mngr) -> dict:
  """The metrics since the last log, on the host: checked, logged and written."""
  host = jax.device_get(history)
  last = {k: float(np.mean([m[k] for m in host])) for k in host[-1] if k != 'weight'}
  last['nonfinite_consecutive'] = float(host[-1]['nonfinite_consecutive'])
  runtime.check_finite(step, last, config.optim.max_consecutive_nonfinite, mngr)
  last.update(progress(step), learning_rate=float(optim.schedule(
      config.optim, config.total_steps)(step)))
  metrics_lib.log_line(step, config.total_steps, last)
  writer.scalars(step, {f'train/{k}': v for k, v in last.items()})
  return last


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, game=None) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the last metrics
  (the training metrics of the last log step and '<eval name>_<key>' of the evaluators).

  `game` is the module whose `init_fn(config, family, model)` and `make_step(config, family,
  model, rules, state_shardings, batch_shardings)` define the state and the step (default:
  this one's; experiments/train_gan.py passes its own). Its metrics must hold
  'nonfinite_consecutive' and 'nonfinite_total'."""
  game = game or sys.modules[__name__]
  if game is sys.modules[__name__]:
    for attr, what, trainer in (('discriminator_loss', 'a GAN', 'train_gan'),
                                ('teacher_of', 'a distillation student', 'train_distill'),
                                ('codes_below', 'a VQ-VAE level or prior', 'train_vqvae')):
      if hasattr(models.family(config.model_name), attr):
        raise ValueError(f'config.model_name={config.model_name!r} is {what}: train it with '
                         f'experiments/{trainer}.py')
  runtime.check_run_config(config)
  with runtime.exclusive(workdir, 'train', f'a trainer of {config.model_name}'):
    return _train(config, workdir, game)


def _train(config: ml_collections.ConfigDict, workdir: str, game) -> dict:
  os.makedirs(workdir, exist_ok=True)  # every process (process 0 made it for its lock)
  family, model = models.family(config.model_name), models.create(config)
  mesh, rules = sharding.make_mesh(config.mesh), sharding.rules(config)
  logging.info('Devices: %s', sharding.describe(mesh))
  batch_sh = sharding.batch_sharding(mesh, rules)
  batches = inputs.make_batches(config.input, sharding=batch_sh)
  init = game.init_fn(config, family, model)
  shardings = state_lib.shardings(init, mesh, rules)
  evals = evaluators.create_all(evaluators.Context(config, family, model, mesh, rules,
                                                   shardings, batch_sh))
  writer = metrics_lib.Writer(os.path.join(workdir, 'tb'))
  preempt = runtime.Preemption()
  with checkpoint.manager(workdir, config) as mngr, jax.set_mesh(mesh):
    state, how = checkpoint.restore_or_init(
        mngr, config, workdir, state_lib.sharded_abstract(init, shardings),
        lambda: state_lib.create(init, shardings, config.seed), batches)
    step = int(state['step'])
    logging.info('%s: %d parameters, receptive field %s, %s at step %d', config.model_name,
                 state_lib.count_params(state['params']),
                 getattr(model, 'receptive_field', '?'), how, step)
    if step == 0 and jax.process_index() == 0:
      with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(config.to_json_best_effort(indent=1) + '\n')
    train_step = game.make_step(config, family, model, rules, shardings, batch_sh)
    progress = metrics_lib.Progress(step, config.total_steps)
    guard = runtime.DivergenceGuard(config.divergence, config.input.get('bits'))
    last, history, suspect = {}, [], False
    while step < config.total_steps:
      state, step_metrics = train_step(state, next(batches))
      step += 1
      history.append(step_metrics)
      stop = preempt(step)
      save = step % config.checkpoint.every_steps == 0 or step == config.total_steps or stop
      if step % config.log_every_steps == 0 or save:
        last = _log(step, config, history, progress, writer, mngr)
        history = []
        suspect = guard(step, last, mngr)
      for name, (evaluator, every) in evals.items():
        if step % every == 0 or step == config.total_steps:
          result = evaluator.run(state)
          writer.write(step, name, result)
          scalars = {k: v for k, v in result.items() if not isinstance(v, metrics_lib.Audio)}
          logging.info('step %d %s: %s', step, name,
                       ' '.join(f'{k}={v:.4f}' for k, v in scalars.items()))
          last.update({f'{name}_{k}': v for k, v in scalars.items()})
      if save and not suspect:
        checkpoint.save(mngr, step, state, batches, config)
      if stop:
        logging.info('Preempted at step %d: checkpoint saved, exiting.', step)
        break
    mngr.wait_until_finished()
  preempt.close()
  writer.close()
  return last


def run_job(job: str, train_fn) -> None:
  """The absl program `python -m experiments.<job> --config=... --workdir=...` that runs
  `train_fn(config, workdir)` (this module's `train_and_evaluate`, or a fork's)."""
  # Flags belong to the program, not the library: other jobs import this module.
  config_flags.DEFINE_config_file('config', None, 'Experiment config file[:arg].',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Checkpoints, TensorBoard logs and config.')

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    config = runtime.config_flag(job)
    if flags.FLAGS.workdir is None or config is None:
      raise app.UsageError('--config and --workdir are required')
    logging.set_verbosity(logging.INFO)
    with runtime.one_line_errors(job):
      distributed.initialize()
      train_fn(config, flags.FLAGS.workdir)
    distributed.shutdown()

  app.run(main, flags_parser=runtime.flags_parser(job))


if __name__ == '__main__':
  run_job('train', train_and_evaluate)
