"""Device meshes and logical-to-mesh shardings (jax.jit shardings; no pjit, pmap or `with mesh`).

Models name array axes logically ('batch', 'embed', 'mlp', ...); `config.sharding_rules` maps
each name to a mesh axis (or None: replicated). The mesh comes from `config.mesh`, an ordered
{axis: size} dict in which one size may be -1 (all remaining devices).
"""

import math

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def make_mesh(mesh_config: ml_collections.ConfigDict,
              devices: list | None = None) -> jax.sharding.Mesh:
  """The mesh of `config.mesh` over `devices` (default: all), with Auto axis types."""
  devices = jax.devices() if devices is None else devices
  names = tuple(mesh_config.keys())
  sizes = [int(mesh_config[n]) for n in names]
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh={dict(mesh_config)}: at most one axis may be -1')
  known = math.prod(s for s in sizes if s != -1)
  if any(s == 0 or s < -1 for s in sizes) or len(devices) % known:
    raise ValueError(f'config.mesh={dict(mesh_config)}: axis sizes must divide the '
                     f'{len(devices)} devices')
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != len(devices):
    raise ValueError(f'config.mesh={dict(mesh_config)}: {math.prod(sizes)} devices in the mesh, '
                     f'{len(devices)} available')
  return jax.make_mesh(tuple(sizes), names, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(names))


def rules(config: ml_collections.ConfigDict) -> tuple[tuple[str, str | None], ...]:
  return tuple((name, axis) for name, axis in config.sharding_rules)


def logical_shardings(mesh: jax.sharding.Mesh, boxed_tree, logical_rules):
  """NamedShardings for a tree of (abstract) nn.LogicallyPartitioned leaves."""
  specs = nn.get_partition_spec(boxed_tree)
  return jax.tree.map(lambda s: NamedSharding(mesh, nn.logical_to_mesh_axes(s, logical_rules)
                                              if s is not None else P()),
                      specs, is_leaf=lambda x: isinstance(x, P) or x is None)


def batch_sharding(mesh: jax.sharding.Mesh, logical_rules) -> NamedSharding:
  """Leading (batch) axis over the mesh axes that 'batch' maps to."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(('batch',), logical_rules))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def describe(mesh: jax.sharding.Mesh) -> str:
  return (f'{jax.process_count()} processes, {jax.device_count()} devices '
          f'({jax.local_device_count()} local, {jax.devices()[0].platform}), mesh '
          f'{dict(mesh.shape)}')


def to_host(tree):
  """A tree of (possibly sharded, multi-process) arrays as numpy arrays on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
