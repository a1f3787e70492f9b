r"""Trains a GAN family, generator against discriminator: the adversarial game of
experiments/train.py's loop.

    python -m experiments.train_gan --config=experiments/configs/melgan.py:runlocal \
        --workdir=/tmp/melgan [--config.total_steps=... --config.discriminator_steps=5 ...]

What differs from the likelihood trainer is the state and the step; the loop (resume,
checkpoints, logging, evaluators, preemption, NaN checks) is train.py's
`train_and_evaluate(config, workdir, game=this module)`.

State: {'step', 'params': {'generator', 'discriminator'}, 'opt_state': {'generator',
'discriminator'}[, 'model_state']}. Each network has its own optimiser (`config.optim` the
generator's, `config.optim_discriminator` the discriminator's; experiments/optim.py: schedule,
clipping, non-finite skipping).

One step (models/layers/gan.py names the family's functions), with rng = fold_in(step key,
step) and the batch cut into `config.discriminator_steps` = n slices (rows j, j + n, ...; each
spread over the data axis like a whole batch):

    for j in 0 .. n-1:      x_fake = fake(generator, slice j, fold_in(rng, j) . 0)
                            discriminator <- its optimiser on discriminator_loss(slice j, x_fake)
    generator <- its optimiser on generator_loss(slice n-1, x_fake) against the updated
                 discriminator, its gradient through the vjp of the last `fake`

so the last generator pass serves both networks' updates (as HiFi-GAN's loop does: one
forward pass, the discriminator stepped first). Metrics: the family's (discriminator metrics
averaged over the n steps), each network's gradient norm ('grad_norm_generator',
'grad_norm_discriminator'), and the non-finite counts of both optimisers (the run fails when
either skips `max_consecutive_nonfinite` updates in a row).
"""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from data import pipeline
from data import specs
from experiments import optim
from experiments import state as state_lib
from experiments import train
import models

NETWORKS = ('generator', 'discriminator')


def make_optimizers(config: ml_collections.ConfigDict) -> dict:
  return {'generator': optim.make(config.optim, config.total_steps),
          'discriminator': optim.make(config.optim_discriminator, config.total_steps)}


def init_fn(config: ml_collections.ConfigDict, family, model: nn.Module):
  """init_fn(rng) -> the boxed GAN state (module docstring), on a dummy batch of 1."""
  txs = make_optimizers(config)
  batch = specs.zeros_batch(config.input, batch_size=1)

  def init(rng):
    variables = dict(family.init(model, rng, batch))
    params = variables.pop('params')
    missing = [k for k in NETWORKS if k not in params]
    if missing:
      raise ValueError(f'config.model_name={config.model_name!r}: its parameters have no '
                       f'{missing} subtree; train_gan trains a generator and a discriminator')
    state = {'step': jnp.zeros((), jnp.int32), 'params': params,
             'opt_state': {k: txs[k].init(nn.unbox(params[k])) for k in NETWORKS}}
    if variables:
      state['model_state'] = variables
    return state
  return init


def _slices(batch: dict, n: int) -> list[dict]:
  """n slices of `batch`, slice j the rows j, j + n, ... (like optim.accumulate's)."""
  if n == 1:
    return [batch]
  return [jax.tree.map(lambda x, j=j: x.reshape(x.shape[0] // n, n, *x.shape[1:])[:, j], batch)
          for j in range(n)]


def _update(tx, grads, opt_state, params):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def make_step(config, family, model, rules, state_shardings, batch_shardings):
  """The jitted GAN step (module docstring)."""
  n = config.discriminator_steps
  if config.microbatches != 1:
    raise ValueError(f'config.microbatches={config.microbatches}: train_gan takes no '
                     'microbatches (use config.discriminator_steps to split a batch)')
  if n < 1 or config.input.batch_size % n:
    raise ValueError(f'config.discriminator_steps={n}: expected a divisor of '
                     f'input.batch_size={config.input.batch_size}')
  try:
    pipeline.batch_shards(config.input.batch_size // n, batch_shardings)
  except ValueError as e:
    raise ValueError(f'config.discriminator_steps={n}: slices of '
                     f'{config.input.batch_size // n} rows do not divide ({e})') from None
  txs = make_optimizers(config)

  def train_step(state, batch):
    rng = state_lib.step_key(config.seed, state['step'])
    params, opt = dict(state['params']), dict(state['opt_state'])
    model_state = state.get('model_state', {})

    def generate(pg, b, key):
      return family.fake(model, {'params': {**params, 'generator': pg}, **model_state}, b, key)

    def d_loss(pd, b, x_fake, key):
      v = {'params': {**params, 'discriminator': pd}, **model_state}
      loss, metrics, new_state = family.discriminator_loss(model, v, b, x_fake, key)
      return loss, (metrics, new_state)

    with nn.logical_axis_rules(rules):
      slices, d_metrics, d_norms = _slices(batch, n), [], []
      for j, b in enumerate(slices):
        key = jax.random.fold_in(rng, j)
        g_key, d_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        if j < n - 1:
          x_fake = generate(params['generator'], b, g_key)
        else:
          x_fake, generator_vjp = jax.vjp(lambda pg: generate(pg, b, g_key),
                                          params['generator'])
        (_, (metrics, model_state)), grads = jax.value_and_grad(d_loss, has_aux=True)(
            params['discriminator'], b, x_fake, d_key)
        params['discriminator'], opt['discriminator'] = _update(
            txs['discriminator'], grads, opt['discriminator'], params['discriminator'])
        d_metrics.append(metrics)
        d_norms.append(optax.tree.norm(grads))

      def g_loss(x):
        return family.generator_loss(model, {'params': params, **model_state}, slices[-1], x,
                                     jax.random.fold_in(rng, n))
      (loss, g_metrics), dx = jax.value_and_grad(g_loss, has_aux=True)(x_fake)
      grads, = generator_vjp(dx)
    params['generator'], opt['generator'] = _update(txs['generator'], grads, opt['generator'],
                                                    params['generator'])
    metrics = {k: jnp.mean(jnp.stack([m[k] for m in d_metrics])) for k in d_metrics[0]}
    metrics.update(g_metrics, loss=loss, grad_norm_generator=optax.tree.norm(grads),
                   grad_norm_discriminator=jnp.mean(jnp.stack(d_norms)))
    counts = [optim.nonfinite_count(opt[k]) for k in NETWORKS]
    metrics.update(nonfinite_consecutive=jnp.maximum(counts[0][0], counts[1][0]),
                   nonfinite_total=counts[0][1] + counts[1][1])
    new = {'step': state['step'] + 1, 'params': params, 'opt_state': opt}
    if model_state:
      new['model_state'] = model_state
    return new, metrics

  return jax.jit(train_step, in_shardings=(state_shardings, batch_shardings),
                 out_shardings=(state_shardings, None), donate_argnums=(0,))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """train.train_and_evaluate with this game's state and step."""
  if not hasattr(models.family(config.model_name), 'discriminator_loss'):
    raise ValueError(f'config.model_name={config.model_name!r} is not a GAN (no '
                     'discriminator_loss): train it with experiments/train.py')
  return train.train_and_evaluate(config, workdir, game=sys.modules[__name__])


if __name__ == '__main__':
  train.run_job('train_gan', train_and_evaluate)
