"""Checkpoints of any family and state layout: a model-free load, model state carried through
steps, checkpoints and resumes, and the step's key folded with the step."""

import json
import os
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import checkpoint
from experiments import sharding
from experiments import state as state_lib
from experiments import train
import models
from tests.conftest import ROOT
from tests.conftest import tiny_sparse_transformer
from tests.conftest import tiny_wavenet


@pytest.fixture(scope='module', params=['wavenet', 'sparse_transformer'])
def workdir(request, tmp_path_factory):
  """A 2-step run of each family."""
  tiny = {'wavenet': tiny_wavenet, 'sparse_transformer': tiny_sparse_transformer}[request.param]
  out = str(tmp_path_factory.mktemp(request.param))
  train.train_and_evaluate(tiny(total_steps=2), out)
  return out


def test_load_needs_no_trainer_and_no_model(workdir):
  code = ('import sys\n'
          'from experiments import checkpoint\n'
          f'state, config = checkpoint.load({workdir!r})\n'
          'assert int(state["step"]) == 2, state["step"]\n'
          'assert state["params"] and state["opt_state"] is not None\n'
          'loaded = sorted(m for m in sys.modules if m.startswith(("experiments.train", '
          '"models.")))\n'
          'assert not loaded, loaded\n'
          'print(config.model_name)\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, XLA_FLAGS=''))
  assert out.returncode == 0, out.stderr[-3000:]
  state, config = checkpoint.load(workdir)
  assert out.stdout.strip() == config.model_name
  # The host arrays are the ones the model's variables hold.
  family, model = models.family(config.model_name), models.create(config)
  from data import specs  # pylint: disable=g-import-not-at-top
  shapes = nn.unbox(jax.eval_shape(lambda r: family.init(model, r, specs.zeros_batch(
      config.input, 1)), jax.random.key(0)))['params']
  assert jax.tree.map(lambda x: x.shape, shapes) == jax.tree.map(np.shape, state['params'])


# ------------------------------------------------------------------------------------------------
# A family with model state and a noisy loss, through the trainer's step and checkpoints.


class _Counting(nn.Module):
  """A linear predictor that counts the batches it has seen in a 'stats' collection."""
  num_classes: int = 256

  @nn.compact
  def __call__(self, x):
    count = self.variable('stats', 'count', lambda: jnp.zeros((), jnp.int32))
    count.value += 1
    w = self.param('w', nn.with_logical_partitioning(nn.initializers.normal(0.1),
                                                     (None, 'embed')), (1, 4))
    return x[..., None] @ w  # [B, T, 4]


def _init(model, rng, batch):
  return model.init(rng, batch['audio'].astype(jnp.float32))


def _loss(model, variables, batch, rng):
  x = batch['audio'].astype(jnp.float32) / 255.
  noise = jax.random.uniform(rng, x.shape)  # the dequantisation noise of a continuous model
  out, mutated = model.apply(variables, x + noise / 255., mutable=['stats'])
  loss = jnp.mean(jnp.square(out.sum(-1)))
  return loss, {'noise_mean': noise.mean(), 'weight': jnp.float32(x.size)}, mutated


FAMILY = types.SimpleNamespace(Model=_Counting, init=_init, loss=_loss)


def _setup(config):
  mesh, rules = sharding.make_mesh(config.mesh), sharding.rules(config)
  model = _Counting()
  batch = {'audio': np.zeros((1, 16), np.int32)}
  init = state_lib.train_init(FAMILY, model, train.make_optimizer(config), batch)
  shardings = state_lib.shardings(init, mesh, rules)
  batch_sh = sharding.batch_sharding(mesh, rules)
  step = train.make_train_step(config, FAMILY, model, train.make_optimizer(config), rules,
                               shardings, batch_sh)
  return init, shardings, step, batch_sh, mesh


def test_model_state_and_step_keys_through_steps_and_checkpoints(tmp_path):
  config = tiny_wavenet(microbatches=2, mesh={'data': 4, 'model': 2})
  init, shardings, step, batch_sh, mesh = _setup(config)
  state = state_lib.create(init, shardings, config.seed)
  assert int(state['model_state']['stats']['count']) == 1  # init ran the model once
  batch = jax.device_put({'audio': np.random.default_rng(0).integers(0, 256, (8, 16))
                          .astype(np.int32)}, batch_sh)
  noise = []
  with jax.set_mesh(mesh):
    for _ in range(3):
      state, metrics = step(state, batch)
      noise.append(float(metrics['noise_mean']))
  # Two microbatches a step: the state threads through both.
  assert int(state['model_state']['stats']['count']) == 1 + 3 * 2
  assert float(metrics['weight']) == 8 * 16  # summed over the microbatches
  assert len(set(noise)) == 3  # a new key every step...
  expected = [np.mean([float(jax.random.uniform(jax.random.fold_in(
      state_lib.step_key(config.seed, s), j), (4, 16)).mean()) for j in range(2)])
              for s in range(3)]
  np.testing.assert_allclose(noise, expected, rtol=1e-5)  # ...fold_in(step key, step)

  with checkpoint.manager(str(tmp_path), config) as mngr:  # as checkpoint.save, without data
    mngr.save(3, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort()))))
    mngr.wait_until_finished()
  loaded, _ = checkpoint.load(str(tmp_path))
  assert int(loaded['model_state']['stats']['count']) == 7
  with checkpoint.manager(str(tmp_path), config, read_only=True) as mngr, jax.set_mesh(mesh):
    resumed, how = checkpoint.restore_or_init(
        mngr, config, str(tmp_path), state_lib.sharded_abstract(init, shardings),
        lambda: pytest.fail('restored, not initialised'))
  assert how == 'resumed from step 3'
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)
