"""Batch keys -> conditioning arrays, the same in the loss and in the sampler.

A model names the batch keys it is conditioned on (`Model.conditions`): frame features of
data/specs.py (MIDI pianoroll, onsets, velocities, log-mel frames) become local conditioning
[B, F, D], concatenated in the model's order, scaled to values of order 1 (velocities from
0..127 to [0, 1]; log-mel, natural log above a floor of at least 1e-5, divided by 4: -11.5..2
to about -3..0.5), so that a model's first conditioning layer starts out of saturation; any
other key is an int [B] of global ids.
"""

import jax.numpy as jnp

DIVISOR = {'velocities': 127., 'mel': 4.}  # to order-1 values


def frames(cond: dict, keys) -> jnp.ndarray:
  """The frame features `keys` of `cond` (a batch) as float32 [B, F, D]."""
  missing = [k for k in keys if k not in cond]
  if missing:
    raise ValueError(f'the model is conditioned on {tuple(keys)}; the batch has no {missing} '
                     '(add them to config.input.frame_features)')
  return jnp.concatenate([jnp.asarray(cond[k]).astype(jnp.float32) / DIVISOR.get(k, 1.)
                          for k in keys], axis=-1)


def ids(cond: dict, key: str) -> jnp.ndarray:
  """The global ids `cond[key]` as int32 [B]."""
  if key not in cond:
    raise ValueError(f'the model is conditioned on ids {key!r}; the batch has no {key!r}')
  return jnp.asarray(cond[key]).astype(jnp.int32)
