"""The trainer: real train_and_evaluate runs, sharding equivalence, resume, preemption, errors."""

import os
import re
import signal
import time

import jax
import numpy as np
import pytest

from experiments import checkpoint
from experiments import train
from experiments.configs import common
import models
from tests.conftest import config_path
from tests.conftest import kill_and_resume
from tests.conftest import loss_and_grads
from tests.conftest import run_module
from tests.conftest import tiny_wavenet as tiny
from tests.conftest import train_step_of

CONFIG = config_path('wavenet')


def overrides_flags(**overrides):
  base = {'model.num_layers': 4, 'model.dilation_cycle': 4, 'model.residual_channels': 16,
          'model.gate_channels': 32, 'model.skip_channels': 16, 'input.crop_samples': 512,
          'microbatches': 1, 'log_every_steps': 2, 'evals.validation.every_steps': 0,
          'evals.sample.every_steps': 0, 'optim.warmup_steps': 2}
  base.update(overrides)
  return [f'--config.{k}={v}' for k, v in base.items()]


def run_cli(workdir, *flags_, wait=True):
  return run_module('experiments.train', f'--config={CONFIG}:runlocal', f'--workdir={workdir}',
                    *flags_, wait=wait)


def params_of(workdir, step=None):
  state, _ = checkpoint.load(workdir, step)
  return state['params']


def test_one_step_through_train_and_evaluate(tmp_path):
  c = tiny(total_steps=1, **{'evals.validation.every_steps': 1, 'evals.validation.batches': 1,
                             'evals.validation.crop_samples': 1024,
                             'evals.sample.every_steps': 1, 'evals.sample.seconds': 0.01})
  out = train.train_and_evaluate(c, str(tmp_path))
  assert np.isfinite(out['loss']) and out['loss'] > 0
  assert out['validation_samples'] == 8 * 1023
  state, saved = checkpoint.load(str(tmp_path))
  assert int(state['step']) == 1 and saved.model.num_layers == 4
  assert os.listdir(tmp_path / 'tb')


@pytest.mark.slow
def test_loss_falls_on_the_embedded_corpus(tmp_path):
  c = tiny(total_steps=100, log_every_steps=10, **{'optim.learning_rate': 1e-2,
                                                    'optim.warmup_steps': 10,
                                                    'checkpoint.every_steps': 100})
  first = tiny(total_steps=1, **{'checkpoint.every_steps': 1})
  start = train.train_and_evaluate(first, str(tmp_path / 'a'))['bits_per_sample']
  end = train.train_and_evaluate(c, str(tmp_path / 'b'))['bits_per_sample']
  assert start > 7.5 and end < start - 1.0, (start, end)


def test_sharded_loss_and_gradients_equal_one_device():
  assert jax.device_count() == 8
  c = tiny(mesh={'data': 4, 'model': 2})
  loss8, grads8, shardings = loss_and_grads(c, jax.devices())
  # The gate channels really are split over the model axis.
  spec = shardings['params']['l0_conv_kernel'].spec
  assert 'model' in jax.tree.leaves(tuple(spec)), spec
  c1 = tiny(mesh={'data': 1, 'model': 1})
  loss1, grads1, _ = loss_and_grads(c1, jax.devices()[:1])
  assert abs(loss8 - loss1) < 1e-5
  for g8, g1 in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1)):
    np.testing.assert_allclose(g8, g1, atol=1e-5, rtol=1e-5)


def test_microbatches_accumulate_the_batch_gradient():
  """Two microbatches over a 4 x 2 mesh: the same update as the whole batch."""
  rng = np.random.default_rng(0)
  batch = {'audio': rng.integers(0, 256, (8, 512)).astype(np.int32)}
  out = []
  for n in (1, 2):
    c = tiny(mesh={'data': 4, 'model': 2}, microbatches=n)
    state, step, batch_sh, mesh = train_step_of(c)
    with jax.set_mesh(mesh):
      state, metrics = step(state, jax.device_put(batch, batch_sh))
    out.append((float(metrics['loss']), jax.device_get(state['params']),
                float(metrics['grad_norm'])))
  assert abs(out[0][0] - out[1][0]) < 1e-5
  assert abs(out[0][2] - out[1][2]) < 1e-5 * out[0][2]  # Adam hides a gradient scale error
  for a, b in zip(jax.tree.leaves(out[0][1]), jax.tree.leaves(out[1][1])):
    np.testing.assert_allclose(a, b, atol=1e-6)
  with pytest.raises(ValueError, match='microbatches=4: microbatches of 2 rows'):
    train_step_of(tiny(mesh={'data': 4, 'model': 2}, microbatches=4))


@pytest.mark.slow
def test_killed_run_resumes_bit_identically(tmp_path):
  total = 10
  flags_ = overrides_flags(total_steps=total, **{'checkpoint.every_steps': 2,
                                                 'checkpoint.keep': 20})
  a, b, _ = kill_and_resume(tmp_path, f'{CONFIG}:runlocal', flags_, total)
  for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_sigterm_saves_and_exits_zero(tmp_path):
  flags_ = overrides_flags(total_steps=100000, **{'checkpoint.every_steps': 3})
  proc = run_cli(tmp_path, *flags_, wait=False)
  first = tmp_path / 'checkpoints' / '3'
  deadline = time.time() + 240
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  match = re.search(r'Preempted at step (\d+)', out)
  assert match, out
  state, _ = checkpoint.load(str(tmp_path))
  assert int(state['step']) == int(match.group(1)) >= 3


@pytest.mark.slow
def test_resume_onto_a_different_mesh(tmp_path):
  """Saved on 8 devices (data 4 x model 2), resumed in a 1-device process."""
  c = tiny(total_steps=2, mesh={'data': 4, 'model': 2})
  train.train_and_evaluate(c, str(tmp_path))
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  code, out = run_module('experiments.train', f'--config={CONFIG}:runlocal',
                         f'--workdir={tmp_path}', *overrides_flags(total_steps=4),
                         '--config.mesh.data=1', '--config.mesh.model=1',
                         '--config.checkpoint.every_steps=2', env=env)
  assert code == 0, out
  assert 'resumed from step 2' in out and '1 devices' in out
  assert int(checkpoint.load(str(tmp_path))[0]['step']) == 4


def test_nan_stops_with_the_last_good_checkpoint(tmp_path):
  c = tiny(total_steps=4, **{'optim.max_consecutive_nonfinite': 1,
                             'checkpoint.every_steps': 2})
  train.train_and_evaluate(c, str(tmp_path))
  good = params_of(str(tmp_path))
  with c.unlocked():
    c.total_steps = 8
    c.optim.learning_rate = 1e38  # step 5 overflows the parameters: non-finite from step 6
  with pytest.raises(FloatingPointError, match='last good checkpoint'):
    train.train_and_evaluate(c, str(tmp_path))
  steps = checkpoint.manager(str(tmp_path), read_only=True).all_steps()
  assert max(steps) == 4
  for x, y in zip(jax.tree.leaves(good), jax.tree.leaves(params_of(str(tmp_path)))):
    np.testing.assert_array_equal(x, y)


def test_bad_model_name():
  with pytest.raises(ValueError, match=r"model_name='nope': expected one of") as e:
    models.create(tiny(model_name='nope'))
  assert all(name in str(e.value) for name in models.families())


def test_bad_model_key():
  c = tiny()
  with c.unlocked():
    c.model.num_layerz = 3
  with pytest.raises(ValueError, match='num_layerz'):
    models.create(c)


def test_bad_override_key_is_one_line_error(tmp_path):
  code, out = run_cli(tmp_path, '--config.total_stepz=3')
  assert code != 0 and 'Traceback' not in out
  assert out.strip().splitlines()[-1].startswith("train: 'total_stepz' Did you mean")
  code, out = run_cli(tmp_path, '--config.model_name=nope')
  assert code != 0 and out.strip().splitlines()[-1] == (
      f"train: config.model_name='nope': expected one of {', '.join(models.families())}")


def test_bad_config_argument():
  with pytest.raises(ValueError, match='runlocl'):
    common.load(f'{CONFIG}:runlocl')


def test_batch_not_divisible_by_data_axis(tmp_path):
  c = tiny(mesh={'data': 8, 'model': 1}, **{'input.batch_size': 12})
  with pytest.raises(ValueError, match=r'input.batch_size=12 .*8 devices'):
    train.train_and_evaluate(c, str(tmp_path))


def test_workdir_of_a_different_model(tmp_path):
  train.train_and_evaluate(tiny(total_steps=2), str(tmp_path))
  with pytest.raises(ValueError, match=r'different wavenet.*num_layers: 4 -> 5'):
    train.train_and_evaluate(tiny(total_steps=4, **{'model.num_layers': 5}), str(tmp_path))


def test_checkpoint_retention_keeps_the_last_n_and_every_kth(tmp_path):
  c = tiny(total_steps=7, **{'checkpoint.every_steps': 1, 'checkpoint.keep': 2,
                             'checkpoint.keep_every': 3})
  train.train_and_evaluate(c, str(tmp_path))
  steps = sorted(checkpoint.manager(str(tmp_path), read_only=True).all_steps())
  assert steps == [3, 6, 7], steps  # the last 2 (6, 7) and every 3rd (3, 6)
