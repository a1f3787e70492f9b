"""The optimiser of `config.optim`: Adam(W), warm-up then decay, clipping, non-finite skipping;
and gradients accumulated over microbatches."""

import jax
import jax.numpy as jnp
import ml_collections
import optax


def schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up to the peak rate, then cosine decay to end_factor x peak, or constant."""
  peak, warmup = config.learning_rate, min(config.warmup_steps, max(total_steps - 1, 0))
  if config.decay == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1),
                                              end_value=peak * config.end_factor)
  if config.decay == 'constant':
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup),
                                 optax.constant_schedule(peak)], [warmup])
  raise ValueError(f"config.optim.decay={config.decay!r}: expected 'cosine' or 'constant'")


def make(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """Clip -> Adam(W) with the schedule, wrapped so that a non-finite update is skipped.

  `optax.apply_if_finite` leaves parameters and moments untouched on a step whose gradients hold
  a NaN or Inf, counts it (`nonfinite_count` below), and raises no error; the trainer fails the
  run after `max_consecutive_nonfinite` such steps in a row.
  """
  lr = schedule(config, total_steps)
  if config.name == 'adam':
    opt = optax.adam(lr, b1=config.b1, b2=config.b2)
  elif config.name == 'adamw':
    opt = optax.adamw(lr, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay)
  else:
    raise ValueError(f"config.optim.name={config.name!r}: expected 'adam' or 'adamw'")
  if config.clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(config.clip_norm), opt)
  # max_consecutive_errors is the count after which apply_if_finite lets a bad update through;
  # the trainer stops well before that, so it never does.
  return optax.apply_if_finite(opt, max_consecutive_errors=10 ** 9)


def nonfinite_count(opt_state) -> tuple:
  """(consecutive, total) skipped non-finite steps of an apply_if_finite state."""
  return opt_state.notfinite_count, opt_state.total_notfinite


def accumulate(grad_fn, params, model_state: dict, batch: dict, n: int, rng):
  """`grad_fn(params, model_state, batch, rng) -> ((loss, (metrics, model_state)), grads)`
  over `n` microbatches of `batch`, each spread over the data axis like the whole (rows
  i n + j go to microbatch j): the mean loss, metrics and gradients (metrics['weight'] summed),
  and the model state threaded through them in order. Microbatch j draws with
  fold_in(rng, j)."""
  if n == 1:
    return grad_fn(params, model_state, batch, rng)
  micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1),
                       batch)

  def body(carry, xs):
    acc, state = carry
    mb, j = xs
    (loss, (metrics, state)), grads = grad_fn(params, state, mb, jax.random.fold_in(rng, j))
    return (jax.tree.map(jnp.add, acc, (loss, metrics, grads)), state), None

  first = jax.tree.map(lambda x: x[0], micro)
  (loss, (metrics, _)), grads = jax.eval_shape(grad_fn, params, model_state, first, rng)
  zero = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), (loss, metrics, grads))
  (total, state), _ = jax.lax.scan(body, (zero, model_state), (micro, jnp.arange(n)))
  loss, metrics, grads = jax.tree.map(lambda x: x / n, total)  # equal-sized microbatches
  if 'weight' in metrics:
    metrics = dict(metrics, weight=total[1]['weight'])
  return (loss, (metrics, state)), grads
