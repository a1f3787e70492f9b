"""One JAX process of tests/data/test_multiprocess.py: global batches over 2 processes.

    python -m tests.data.multiprocess_worker PORT PROCESS_ID DATASET MANUAL_DIR DATA_DIR OUT_JSON

(It must not import tests.conftest, which asks for 8 devices per process.)
"""

import json
import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
os.environ['JAX_PLATFORMS'] = 'cpu'

import jax  # pylint: disable=g-import-not-at-top
from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from data import pipeline  # pylint: disable=g-import-not-at-top
from data import specs  # pylint: disable=g-import-not-at-top


def main(port, process_id, dataset, manual_dir, data_dir, out):
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=2, process_id=int(process_id),
                             initialization_timeout=60)
  mesh = jax.make_mesh((4,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  c = specs.input_config()
  c.update(dataset=dataset, manual_dir=manual_dir, data_dir=data_dir, batch_size=4,
           crop_samples=2000)
  result = {'local': [], 'global': [], 'shape': None, 'one_process': []}
  # What a single process reading the whole batch of 4 gets.
  source, builder = pipeline.load_source(c)
  single = iter(pipeline.make_loader(c, source, builder, 4, 0, 1))
  batches = pipeline.make_batches(c, sharding)
  for _ in range(3):
    batch = next(batches)
    local = np.concatenate([np.asarray(s.data) for s in batch['index'].addressable_shards])
    result['local'].append(local.tolist())
    result['global'].append(
        np.asarray(multihost_utils.process_allgather(batch['index'], tiled=True)).tolist())
    result['shape'] = list(batch['audio'].shape)
    one = next(single)
    result['one_process'].append(one['index'].tolist())
    result.setdefault('one_process_audio_equal', []).append(bool(np.array_equal(
        one['audio'], multihost_utils.process_allgather(batch['audio'], tiled=True))))
  with open(out, 'w') as f:
    json.dump(result, f)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main(*sys.argv[1:])
