"""The train state: built from an `init_fn(rng)`, abstract first, then in place on the mesh.

A train state is a dict. The likelihood trainer's, from `train_init`:

    {'step': int32 [], 'params': ..., 'opt_state': ..., 'model_state': {...}}

('model_state', the model's collections other than 'params', only where it has some). Another
trainer writes its own init_fn (a GAN: 'params' {'generator', 'discriminator'} and an
'opt_state' for each) and uses the rest of this module unchanged:

    init_fn = state.train_init(family, model, tx, batch)      # or a trainer's own
    shardings = state.shardings(init_fn, mesh, rules)         # from the logical axes
    abstract = state.sharded_abstract(init_fn, shardings)     # a restore's target
    fresh = state.create(init_fn, shardings, config.seed)     # jit(init, out_shardings)

Shapes come before memory: `jax.eval_shape(init_fn)` gives the logically boxed tree, whose
partition specs through the config's rules give the NamedShardings, and the real state is then
created already sharded. The seed's key splits into the init key ([0]) and the key that every
step folds with its step number ([1], `step_key`), so no RNG state needs a checkpoint.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from experiments import sharding


def keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """(init key, step key) of a run's seed."""
  init, step = jax.random.split(jax.random.key(seed))
  return init, step


def step_key(seed: int, step) -> jax.Array:
  """The key of training step `step`: fold_in(step key, step)."""
  return jax.random.fold_in(keys(seed)[1], step)


def train_init(family, model: nn.Module, tx: optax.GradientTransformation,
               batch: dict) -> Callable:
  """init_fn(rng) -> boxed state {'step', 'params', 'opt_state'[, 'model_state']} of a family
  trained by one optimiser over all of its params; `batch` is a dummy batch."""
  def init(rng):
    variables = dict(family.init(model, rng, batch))
    params = variables.pop('params')
    state = {'step': jnp.zeros((), jnp.int32), 'params': params,
             'opt_state': tx.init(nn.unbox(params))}
    if variables:
      state['model_state'] = variables
    return state
  return init


# The entries of a train state that evaluation and sampling read (checkpoint.load(keys=...)).
VARIABLE_KEYS = ('step', 'params', 'model_state')


def variables(state: dict) -> dict:
  """The model's variables in a train state: {'params': ..., **model_state}."""
  return {'params': state['params'], **state.get('model_state', {})}


def abstract(init_fn: Callable, boxed: bool = False):
  """ShapeDtypeStructs of the state (logically boxed if `boxed`)."""
  tree = jax.eval_shape(init_fn, jax.random.key(0))
  return tree if boxed else nn.unbox(tree)


def shardings(init_fn: Callable, mesh: jax.sharding.Mesh, rules) -> dict:
  """NamedShardings of the state, from the model's logical axes and `rules`."""
  return sharding.logical_shardings(mesh, abstract(init_fn, boxed=True), rules)


def sharded_abstract(init_fn: Callable, state_shardings: dict) -> dict:
  """The state's ShapeDtypeStructs laid out as `state_shardings` (the target of a restore)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract(init_fn), state_shardings)


def create(init_fn: Callable, state_shardings: dict, seed: int) -> dict:
  """The state initialised from `seed`, created in place with `state_shardings`."""
  return jax.jit(lambda r: nn.unbox(init_fn(r)), out_shardings=state_shardings)(keys(seed)[0])


def count_params(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


def variable_shardings(family, model: nn.Module, batch: dict, mesh: jax.sharding.Mesh,
                       rules) -> dict:
  """{'params': ...[, 'model_state': ...]} NamedShardings of the family's variables, from its
  `init` alone (what evaluation and sampling restore; no optimiser needed)."""
  boxed = dict(jax.eval_shape(lambda r: family.init(model, r, batch), jax.random.key(0)))
  out = {'params': boxed.pop('params')}
  if boxed:
    out['model_state'] = boxed
  return sharding.logical_shardings(mesh, out, rules)


def restore_shardings(variable_shardings_: dict, mesh: jax.sharding.Mesh):
  """sharding_of(path) for checkpoint.saved_abstract: the variables' own shardings, everything
  else of the state (optimiser state, step) replicated."""
  replicated = sharding.replicated(mesh)

  def sharding_of(path):
    node = variable_shardings_
    for k in path:
      key = getattr(k, 'key', getattr(k, 'idx', None))
      if not isinstance(node, dict) or key not in node:
        return replicated
      node = node[key]
    return node if isinstance(node, jax.sharding.Sharding) else replicated
  return sharding_of
