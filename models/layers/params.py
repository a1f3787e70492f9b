"""Parameter helpers for families that keep their parameters as one nested dict.

Families here create every parameter in one `@nn.compact` method (`_params`) that returns a
nested dict, and compute with pure functions of that dict, so that the parallel pass and the
cached sampler share one definition of each layer. These helpers create the parameters with
logical axis names (for `config.sharding_rules`) and fetch the dict back from variables.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def param(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple, init) -> jax.Array:
  """A parameter of `module` with logical axes `axes`, in `module.param_dtype`."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape,
                      jnp.dtype(module.param_dtype))


def dense(module: nn.Module, name: str, d_in, d_out, axes_in, axes_out,
          scale: float = 1.0) -> dict:
  """{'kernel': [*d_in, *d_out], 'bias': [*d_out]}: fan-in truncated normal x `scale`, zero
  bias; `d_in`, `d_out` and their axes are an int / name or tuples of them."""
  d_in, d_out = (d if isinstance(d, tuple) else (d,) for d in (d_in, d_out))
  axes_in, axes_out = (a if isinstance(a, tuple) else (a,) for a in (axes_in, axes_out))
  n = len(d_in)
  init = nn.initializers.variance_scaling(
      scale, 'fan_in', 'truncated_normal', in_axis=tuple(range(n)),
      out_axis=tuple(range(n, n + len(d_out))))
  return {'kernel': param(module, f'{name}_kernel', d_in + d_out, axes_in + axes_out, init),
          'bias': param(module, f'{name}_bias', d_out, axes_out, nn.initializers.zeros)}


def layer_norm(module: nn.Module, name: str, dim: int, axis: str = 'embed') -> dict:
  """{'scale': ones [dim], 'bias': zeros [dim]} of a LayerNorm over logical axis `axis`."""
  return {'scale': param(module, f'{name}_scale', (dim,), (axis,), nn.initializers.ones),
          'bias': param(module, f'{name}_bias', (dim,), (axis,), nn.initializers.zeros)}


def nested(model: nn.Module, variables: dict) -> dict:
  """The nested parameter dict of `variables` ({'params': ...}), from the model's `_params`."""
  return model.apply(variables, method=lambda m: m._params())  # pylint: disable=protected-access


def cast(tree, dtype):
  """Every array of `tree` in `dtype` (mixed precision: params stay in param_dtype)."""
  return jax.tree.map(lambda a: a.astype(dtype), tree)
