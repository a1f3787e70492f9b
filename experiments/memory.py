"""Memory plans: the bytes per device of a config's train step on a target mesh, before launch.

The step is compiled ahead of time (jit -> lower -> compile) from abstract inputs, sharded as
training shards them, for the config's global batch; nothing is allocated. XLA reports, per
device: arguments (state + batch shard), outputs (the new state, which the donated state
aliases), and temporaries (activations kept for the backward pass, gradients, workspace). The
argument and output sizes follow from the shardings and hold on any backend; the temporaries
are those of the backend that compiled the step, so a plan compiled on CPU estimates an
accelerator's (XLA's accelerator backends fuse and rematerialise differently). In particular
XLA:CPU keeps what `jax.checkpoint` (a model's `remat`) would recompute, so for rematerialised
models a CPU plan overstates the temporaries; plan those on the accelerator itself.
"""

import math

import jax
import ml_collections
import numpy as np

from data import specs
from experiments import sharding
from experiments import state as state_lib
from experiments import train
import models

GIB = 2 ** 30


def parse_mesh(text: str) -> ml_collections.ConfigDict:
  """'data:4,model:2' -> an ordered {axis: size} ConfigDict, as config.mesh."""
  out = ml_collections.ConfigDict()
  for part in filter(None, text.split(',')):
    name, _, size = part.partition(':')
    try:
      out[name.strip()] = int(size)
    except ValueError:
      raise ValueError(f"--mesh={text}: expected 'axis:size,...' such as 'data:4,model:2'"
                       ) from None
  if not out:
    raise ValueError(f"--mesh={text!r}: expected 'axis:size,...' such as 'data:4,model:2'")
  return out


def _abstract_batch(config, batch_sharding) -> dict:
  """ShapeDtypeStructs of a training batch of the config's global size (data/specs.py)."""
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
          for k, (shape, dtype) in specs.batch_spec(config.input).items()}


def _tree_bytes_per_device(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shard = x.sharding.shard_shape(x.shape)
    total += math.prod(shard) * np.dtype(x.dtype).itemsize
  return total


def plan(config: ml_collections.ConfigDict, devices: list | None = None,
         device_memory_gb: float | None = None) -> dict:
  """The per-device memory of `config`'s train step on `config.mesh` over `devices`.

  Returns a dict of byte counts per device (params, opt_state, batch, arguments, outputs,
  aliased, temporaries, peak = arguments + outputs - aliased + temporaries), in GiB too, and
  whether the peak fits `device_memory_gb` if given.
  """
  family, model = models.family(config.model_name), models.create(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules(config)
  init = train.init_fn(config, family, model)
  shardings = state_lib.shardings(init, mesh, rules)
  state = state_lib.sharded_abstract(init, shardings)
  batch_sh = sharding.batch_sharding(mesh, rules)
  batch = _abstract_batch(config, batch_sh)
  step = train.make_train_step(config, family, model, train.make_optimizer(config), rules,
                               shardings, batch_sh)
  with jax.set_mesh(mesh):
    compiled = step.lower(state, batch).compile()
  stats = compiled.memory_analysis()
  out = {
      'mesh': dict(mesh.shape), 'backend': mesh.devices.flat[0].platform,
      'global_batch': config.input.batch_size, 'crop_samples': config.input.crop_samples,
      'microbatches': config.microbatches, 'compute_dtype': config.model.get('dtype', 'float32'),
      'parameters': int(sum(math.prod(x.shape) for x in jax.tree.leaves(state['params']))),
      'params_bytes': _tree_bytes_per_device(state['params']),
      'opt_state_bytes': _tree_bytes_per_device(state['opt_state']),
      'batch_bytes': _tree_bytes_per_device(batch),
      'argument_bytes': int(stats.argument_size_in_bytes),
      'output_bytes': int(stats.output_size_in_bytes),
      'aliased_bytes': int(stats.alias_size_in_bytes),
      'temporary_bytes': int(stats.temp_size_in_bytes),
  }
  out['peak_bytes'] = (out['argument_bytes'] + out['output_bytes'] - out['aliased_bytes'] +
                       out['temporary_bytes'])
  out.update({k.replace('_bytes', '_gib'): v / GIB for k, v in list(out.items())
              if k.endswith('_bytes')})
  if device_memory_gb:
    out['device_memory_gib'] = device_memory_gb
    out['fits'] = bool(out['peak_gib'] <= device_memory_gb)
  return out


def describe(p: dict) -> str:
  """A plan as a few lines for a terminal."""
  lines = [f"mesh {p['mesh']} ({p['backend']}), global batch {p['global_batch']} x "
           f"{p['crop_samples']} samples, {p['microbatches']} microbatches, "
           f"{p['compute_dtype']} compute, {p['parameters']:,} parameters",
           'per device (GiB):']
  for k in ('params', 'opt_state', 'batch', 'argument', 'output', 'aliased', 'temporary',
            'peak'):
    lines.append(f'  {k:10s} {p[k + "_gib"]:9.3f}')
  if 'fits' in p:
    lines.append(f"  {'fits' if p['fits'] else 'does NOT fit'} in {p['device_memory_gib']} GiB")
  return '\n'.join(lines)
