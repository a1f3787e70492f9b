r"""Trains a likelihood model (WaveNet, ...): `train_and_evaluate(config, workdir)`.

    python -m experiments.train --config=experiments/configs/wavenet.py:runlocal --workdir=/tmp/wn \
        [--config.total_steps=1000 --config.seed=1 ...]

One loop for every likelihood model: `models/<config.model_name>.py` exports `Model` (built as
`Model(**config.model)`, applied to codes [B, T] plus optional conditioning, returning per-
position outputs where position t predicts codes[:, t + 1]) and `nll(model, out, targets)` in
nats. The loss is the mean NLL over the B x (T - 1) predicted samples of a batch; metrics report
it in bits per sample.

Start-up: the mesh of `config.mesh`; the state {'step', 'params', 'opt_state'} built already
sharded (eval_shape -> logical partition specs -> jit(init, out_shardings)); then resumed as
experiments/checkpoint.py describes. Each step is jitted with the state donated. Every
`log_every_steps` the metrics come to the host, are checked for NaN/Inf (the run stops, its last
good checkpoint intact) and written to TensorBoard under workdir/tb. On SIGTERM the current step
finishes, a checkpoint is written and waited for, and train_and_evaluate returns (exit 0).
"""

import functools
import importlib
import os
import pkgutil
import signal

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import optax

from data import maestro
from data import pipeline
from experiments import checkpoint
from experiments import distributed
from experiments import metrics as metrics_lib
from experiments import optim
from experiments import sharding

LOG2 = float(np.log(2.0))


# ------------------------------------------------------------------------------------------------
# The model and its inputs.


def model_module(config: ml_collections.ConfigDict):
  """models/<config.model_name>.py; raises ValueError naming the valid choices."""
  import models  # pylint: disable=g-import-not-at-top
  names = sorted(m.name for m in pkgutil.iter_modules(models.__path__))
  if config.model_name in names:
    module = importlib.import_module(f'models.{config.model_name}')
    if hasattr(module, 'Model'):
      return module
  # Shared building blocks (models/attention.py) are modules without a Model.
  families = [n for n in names if hasattr(importlib.import_module(f'models.{n}'), 'Model')]
  raise ValueError(f'config.model_name={config.model_name!r}: expected one of '
                   f'{", ".join(families)}')


def create_model(config: ml_collections.ConfigDict) -> nn.Module:
  module = model_module(config)
  try:
    return module.Model(**config.model)
  except TypeError as e:  # an unknown keyword
    raise ValueError(f'config.model for {config.model_name}: {e}') from None


def model_inputs(config: ml_collections.ConfigDict, batch: dict) -> dict:
  """A batch -> the model's keyword inputs: codes, and local / global conditioning if any."""
  out = {'codes': batch['audio']}
  if config.local_features:
    missing = [k for k in config.local_features if k not in batch]
    if missing:
      raise ValueError(f'config.local_features={tuple(config.local_features)}: batch has no '
                       f'{missing}; add them to config.input.frame_features')
    out['local'] = jnp.concatenate(
        [batch[k].astype(jnp.float32) / (127. if k == 'velocities' else 1.)
         for k in config.local_features], axis=-1)  # [B, F, sum D]
  if config.global_key:
    out['global_ids'] = batch[config.global_key].astype(jnp.int32)
  return out


def dummy_inputs(config: ml_collections.ConfigDict, model: nn.Module) -> dict:
  """Inputs of batch 1 shaped like the training crops (for init and shape inference)."""
  t = config.input.crop_samples or 1024
  out = {'codes': jnp.zeros((1, t), jnp.int32)}
  if config.local_features:
    out['local'] = jnp.zeros((1, -(-t // model.hop_length), model.local_features))
  if config.global_key:
    out['global_ids'] = jnp.zeros((1,), jnp.int32)
  return out


def decode(input_config: ml_collections.ConfigDict, codes: np.ndarray) -> np.ndarray:
  """Codes -> float audio in [-1, 1], inverting the pipeline's encoding."""
  return pipeline.decode(codes, input_config.encoding, input_config.bits)


def sample_rate(config: ml_collections.ConfigDict) -> int:
  """The model's audio rate: that of the dataset it is trained on."""
  return maestro.get_config(config.input.dataset).sample_rate


# ------------------------------------------------------------------------------------------------
# State, steps.


def _boxed_init(config, model, tx):
  def init(rng):
    params = model.init(rng, **dummy_inputs(config, model))['params']
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params)}
  return init


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return optim.make(config.optim, config.total_steps)


def abstract_state(config: ml_collections.ConfigDict, model: nn.Module, boxed: bool = False):
  """ShapeDtypeStructs of the train state (logically boxed if `boxed`)."""
  tree = jax.eval_shape(_boxed_init(config, model, make_optimizer(config)), jax.random.key(0))
  return tree if boxed else nn.unbox(tree)


def state_shardings(config, model, mesh, rules) -> dict:
  """NamedShardings of the train state, from the model's logical axes and `rules`."""
  return sharding.logical_shardings(mesh, abstract_state(config, model, boxed=True), rules)


def sharded_abstract_state(config, model, shardings) -> dict:
  """The state's ShapeDtypeStructs laid out as `shardings` (the target of a restore)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state(config, model), shardings)


def init_state(config, model, shardings) -> dict:
  """The state initialised from config.seed, created in place with `shardings`."""
  init = _boxed_init(config, model, make_optimizer(config))
  rng = jax.random.split(jax.random.key(config.seed))[0]  # [1] drives the steps
  return jax.jit(lambda r: nn.unbox(init(r)), out_shardings=shardings)(rng)


def create_state(config, model, mesh, rules) -> tuple[dict, dict]:
  """(state initialised in place on the mesh from config.seed, its shardings)."""
  shardings = state_shardings(config, model, mesh, rules)
  return init_state(config, model, shardings), shardings


def loss_fn(model, module, config, params, batch):
  """(mean NLL in nats over the unmasked predicted samples, (their NLL sum, their count))."""
  inputs = model_inputs(config, batch)
  out = model.apply({'params': params}, **inputs)  # [B, T, Q]
  codes = inputs['codes']
  nll = module.nll(model, out[:, :-1], codes[:, 1:])  # [B, T - 1]: position t predicts t + 1
  mask = batch.get('mask', jnp.ones(codes.shape[:1], bool))[:, None]
  count = jnp.sum(mask) * nll.shape[1]
  total = jnp.sum(jnp.where(mask, nll, 0.))
  return total / jnp.maximum(count, 1), (total, count)


def make_train_step(config, model, tx, rules, state_shardings, batch_shardings):
  """The jitted step: loss and gradients (accumulated over `config.microbatches` slices of the
  batch, each spread over the data axis like the whole), the optax update, metrics."""
  module = model_module(config)
  n = config.microbatches
  if n < 1 or config.input.batch_size % n:
    raise ValueError(f'config.microbatches={n}: expected a divisor of input.batch_size='
                     f'{config.input.batch_size}')
  try:  # each microbatch must spread over processes and data devices like a whole batch
    pipeline.batch_shards(config.input.batch_size // n, batch_shardings)
  except ValueError as e:
    raise ValueError(f'config.microbatches={n}: microbatches of {config.input.batch_size // n} '
                     f'rows do not divide ({e})') from None
  grad_fn = jax.value_and_grad(lambda p, b: loss_fn(model, module, config, p, b)[0])

  def loss_and_grads(params, batch):
    if n == 1:
      return grad_fn(params, batch)
    # Rows i n + j go to microbatch j, so that each device's rows split evenly among them.
    micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]),
                                                0, 1), batch)

    def body(acc, mb):
      return jax.tree.map(jnp.add, acc, grad_fn(params, mb)), None

    zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    total, _ = jax.lax.scan(body, zero, micro)
    return jax.tree.map(lambda x: x / n, total)  # equal-sized microbatches: the batch mean

  def train_step(state, batch):
    with nn.logical_axis_rules(rules):
      loss, grads = loss_and_grads(state['params'], batch)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    consecutive, total = optim.nonfinite_count(opt_state)
    metrics = {'loss': loss, 'bits_per_sample': loss / LOG2, 'grad_norm': optax.tree.norm(grads),
               'nonfinite_consecutive': consecutive, 'nonfinite_total': total}
    return {'step': state['step'] + 1, 'params': params, 'opt_state': opt_state}, metrics

  return jax.jit(train_step, in_shardings=(state_shardings, batch_shardings),
                 out_shardings=(state_shardings, None), donate_argnums=(0,))


def make_eval_step(config, model, rules, params_shardings, batch_shardings):
  module = model_module(config)

  def eval_step(params, batch):
    with nn.logical_axis_rules(rules):
      _, (total, count) = loss_fn(model, module, config, params, batch)
    return total, count

  return jax.jit(eval_step, in_shardings=(params_shardings, batch_shardings))


def eval_batches(config: ml_collections.ConfigDict, split: str, batch_size: int,
                 crop_samples, batch_sharding, max_batches: int | None = None):
  """Every segment of `split` once, in order, as global batches with `mask`.

  A process can have fewer rows of the last global batch than others, or none; the short ones
  pad with empty batches so that every process runs the same number of steps (a collective
  would otherwise hang).
  """
  c = ml_collections.ConfigDict(config.input.to_dict())
  c.update(split=split, batch_size=batch_size, crop_samples=crop_samples, shuffle=False,
           num_epochs=1, drop_remainder=False, worker_count=0)
  source, builder = pipeline.load_source(c)
  per_process = pipeline.batch_shards(batch_size, batch_sharding)
  host = pipeline.Batches(pipeline.make_loader(c, source, builder, per_process,
                                               jax.process_index(), jax.process_count()),
                          None, per_process, pad=True)
  n = -(-len(source) // batch_size)  # global batches; a process's last ones may be empty
  if max_batches is not None:
    n = min(n, max_batches)
  template = None
  for _ in range(n):
    batch = next(host, None)
    if batch is None:  # this process's rows are done: an all-padding batch
      if template is None:  # it had none at all (a split smaller than one global batch)
        template = next(pipeline.Batches(pipeline.make_loader(
            c, source, builder, per_process, 0, jax.process_count()), None, per_process, True))
      batch = {k: np.zeros_like(v) for k, v in template.items()}
    template = template or batch
    yield {k: jax.make_array_from_process_local_data(
        batch_sharding, v, (per_process * jax.process_count(),) + v.shape[1:])
           for k, v in batch.items()}


def evaluate(eval_step, params, batches) -> dict:
  """Mean NLL over every unmasked predicted sample of `batches`, in nats and bits/sample."""
  total, count = 0., 0
  for batch in batches:
    t, c = eval_step(params, batch)
    total, count = total + float(t), count + int(c)
  nll = total / max(count, 1)
  return {'nll': nll, 'bits_per_sample': nll / LOG2, 'samples': count}


def marginal_entropy_bits(config: ml_collections.ConfigDict, split: str) -> float:
  """Entropy of the code marginal over every sample of `split`, in bits: the baseline NLL of a
  model that ignores context."""
  c = ml_collections.ConfigDict(config.input.to_dict())
  c.update(split=split, batch_size=jax.process_count(), crop_samples=None, shuffle=False,
           num_epochs=1, drop_remainder=False, worker_count=0, frame_features=())
  counts = np.zeros(2 ** c.bits, np.int64)
  for batch in pipeline.make_batches(c, shard_index=0, shard_count=1):
    counts += np.bincount(batch['audio'][batch['mask']].ravel(), minlength=counts.size)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log2(p)).sum())


def sample_for_tensorboard(config, model, params, batch, rng) -> np.ndarray:
  """`config.evals.sample_seconds` of audio from the cached sampler, conditioned on the first
  example of `batch` where the model is conditioned."""
  module = model_module(config)
  rate = sample_rate(config)
  n = int(config.evals.sample_seconds * rate)
  inputs = {k: np.asarray(v)[:1] for k, v in model_inputs(config, batch).items()}  # host batch
  kwargs = {}
  if 'local' in inputs:
    kwargs['local'] = inputs['local']
  if 'global_ids' in inputs:
    kwargs['global_ids'] = inputs['global_ids']
  codes = np.concatenate(list(module.generate(
      model, {'params': params}, rng, n, batch=1, temperature=config.evals.temperature,
      **kwargs)), axis=1)
  return decode(config.input, codes[0])


class _Preemption:
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


def _start(config, workdir, mngr, model, shardings, batches):
  """The first state, in the resume order of experiments/checkpoint.py; returns (state, how)."""
  abstract = sharded_abstract_state(config, model, shardings)
  step = mngr.latest_step()
  if step is not None:
    checkpoint.check_compatible(checkpoint.saved_config(mngr, step), config, f'workdir {workdir}')
    return checkpoint.restore(mngr, step, abstract, batches), f'resumed from step {step}'
  for key, with_data in (('resume', True), ('init_from', False)):
    if not config[key]:
      continue
    with checkpoint.manager(config[key], read_only=True) as src:
      s = src.latest_step()
      if s is None:
        raise FileNotFoundError(f'config.{key}={config[key]}: no checkpoint in '
                                f'{checkpoint.directory(config[key])}')
      checkpoint.check_compatible(checkpoint.saved_config(src, s), config,
                                  f'config.{key}={config[key]}')
      state = checkpoint.restore(src, s, abstract, batches if with_data else None)
    if with_data:
      return state, f'resumed from {config[key]} step {s}'
    fresh = init_state(config, model, shardings)
    return dict(fresh, params=state['params']), f'parameters from {config[key]} step {s}'
  return init_state(config, model, shardings), 'from scratch'


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the last metrics."""
  os.makedirs(workdir, exist_ok=True)
  model = create_model(config)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config)
  logging.info('Devices: %s', sharding.describe(mesh))
  tx = make_optimizer(config)
  batch_sh = sharding.batch_sharding(mesh, rules)
  batches = pipeline.make_batches(config.input, sharding=batch_sh)
  shardings = state_shardings(config, model, mesh, rules)
  writer = metrics_lib.Writer(os.path.join(workdir, 'tb'))
  preempt = _Preemption()
  with checkpoint.manager(workdir, config) as mngr, jax.set_mesh(mesh):
    state, how = _start(config, workdir, mngr, model, shardings, batches)
    step = int(state['step'])
    n_params = sum(x.size for x in jax.tree.leaves(state['params']))
    logging.info('%s: %d parameters, receptive field %s, %s at step %d', config.model_name,
                 n_params, getattr(model, 'receptive_field', '?'), how, step)
    if step == 0 and jax.process_index() == 0:
      with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(config.to_json_best_effort(indent=1) + '\n')
    train_step = make_train_step(config, model, tx, rules, shardings, batch_sh)
    eval_step = make_eval_step(config, model, rules, shardings['params'], batch_sh)
    rng = jax.random.split(jax.random.key(config.seed))[1]  # folded with the step
    progress = metrics_lib.Progress(step, config.total_steps)
    last, history = {}, []
    while step < config.total_steps:
      batch = next(batches)
      state, step_metrics = train_step(state, batch)
      step += 1
      history.append(step_metrics)
      stop = preempt(step)
      save = step % config.checkpoint.every_steps == 0 or step == config.total_steps or stop
      if step % config.log_every_steps == 0 or save:
        host = jax.device_get(history)
        history = []
        last = {k: float(np.mean([m[k] for m in host])) for k in host[-1]}
        last['nonfinite_consecutive'] = float(host[-1]['nonfinite_consecutive'])
        _check_finite(config, step, last, mngr)
        last.update(progress(step), learning_rate=float(optim.schedule(
            config.optim, config.total_steps)(step)))
        metrics_lib.log_line(step, config.total_steps, last)
        writer.scalars(step, {f'train/{k}': v for k, v in last.items()})
      if config.evals.every_steps and (step % config.evals.every_steps == 0 or
                                       step == config.total_steps):
        val = evaluate(eval_step, state['params'], eval_batches(
            config, config.evals.split, config.evals.batch_size, config.evals.crop_samples,
            batch_sh, config.evals.batches))
        logging.info('step %d %s: %.4f bits/sample over %d samples', step, config.evals.split,
                     val['bits_per_sample'], val['samples'])
        writer.scalars(step, {f'{config.evals.split}/{k}': v for k, v in val.items()})
        last.update({f'{config.evals.split}_{k}': v for k, v in val.items()})
      if config.evals.sample_every_steps and step % config.evals.sample_every_steps == 0:
        params, host_batch = sharding.to_host((state['params'], batch))  # all processes
        if jax.process_index() == 0:
          wave = sample_for_tensorboard(config, model, params, host_batch, jax.random.fold_in(
              rng, step))
          writer.audio(step, 'sample', wave, sample_rate(config))
      if save:
        checkpoint.save(mngr, step, state, batches, config)
      if stop:
        logging.info('Preempted at step %d: checkpoint saved, exiting.', step)
        break
    mngr.wait_until_finished()
  preempt.close()
  writer.close()
  return last


def _check_finite(config, step, values, mngr) -> None:
  """Stops the run (before any save of this state) if the loss is NaN/Inf or updates have been
  non-finite for too long."""
  bad = not np.isfinite(values['loss'])
  if values['nonfinite_consecutive'] >= config.optim.max_consecutive_nonfinite:
    bad = True
  if bad:
    mngr.wait_until_finished()
    raise FloatingPointError(
        f'step {step}: loss {values["loss"]}, {values["nonfinite_consecutive"]:.0f} consecutive '
        f'non-finite updates; stopped with the last good checkpoint (step {mngr.latest_step()}) '
        'intact')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if flags.FLAGS.workdir is None or flags.FLAGS.config is None:
    raise app.UsageError('--config and --workdir are required')
  logging.set_verbosity(logging.INFO)
  try:
    distributed.initialize()
    train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  except (FileNotFoundError, ValueError, FloatingPointError) as e:
    raise SystemExit(f'train: {e}') from None
  distributed.shutdown()


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad --config or --config.key reported in one line rather than
  a traceback."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    cause = e
    while cause.args and isinstance(cause.args[0], Exception):  # ml_collections nests them
      cause = cause.args[0]
    lines = str(cause.args[0] if cause.args else cause).strip().splitlines()
    if len(lines) > 3:  # a config file's traceback: its last line says what went wrong
      lines = lines[-1:]
    raise SystemExit(f'train: {" ".join(" ".join(lines).split())}') from None


if __name__ == '__main__':
  # Flags belong to the program, not the library: other jobs import this module.
  config_flags.DEFINE_config_file('config', None, 'Experiment config file[:arg].',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Checkpoints, TensorBoard logs and config.')
  app.run(main, flags_parser=_parse_flags)
