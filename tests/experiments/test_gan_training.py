"""The GAN trainer (experiments/train_gan.py) with every GAN family: sharded losses and gradients
of both networks equal the single-device ones, the step's order and slicing, falling
reconstruction losses on the embedded corpus, a SIGKILL resume with bit-identical parameters of
both networks, samples through sample.py, and one-line errors."""

import os

import flax.linen as nn
import jax
import numpy as np
import pytest
import soundfile as sf

from data import pipeline
from experiments import sample
from experiments import sharding
from experiments import state as state_lib
from experiments import train
from experiments import train_gan
import models
from tests.conftest import config_path
from tests.conftest import kill_and_resume
from tests.conftest import metric_over_steps
from tests.conftest import run_module
from tests.conftest import tiny_gan

GANS = ('melgan', 'hifigan', 'wavegan', 'specgan')


def _losses_and_grads(c, devices):
  """Both networks' losses and gradients at the fresh state of `c` on a random batch of 8 over
  `devices`, jitted with the state's shardings, as train_gan's step takes them."""
  family, model = models.family(c.model_name), models.create(c)
  mesh, rules = sharding.make_mesh(c.mesh, devices=devices), sharding.rules(c)
  init = train_gan.init_fn(c, family, model)
  shardings = state_lib.shardings(init, mesh, rules)
  state = state_lib.create(init, shardings, c.seed)
  rng = np.random.default_rng(0)
  t = c.input.crop_samples
  batch = {'audio': (0.3 * rng.normal(size=(8, t))).astype(np.float32)}
  if 'mel' in model.conditions:
    batch['mel'] = rng.normal(size=(8, t // model.hop_length, model.local_features)).astype(
        np.float32) - 2.
  batch = jax.device_put(batch, sharding.batch_sharding(mesh, rules))

  def f(params, model_state, batch):
    key = jax.random.key(3)
    with nn.logical_axis_rules(rules):
      v = lambda p: {'params': p, **model_state}
      x_fake = family.fake(model, v(params), batch, key)
      d = jax.value_and_grad(lambda pd: family.discriminator_loss(
          model, v({**params, 'discriminator': pd}), batch, x_fake, key)[0])
      g = jax.value_and_grad(lambda pg: family.generator_loss(
          model, v({**params, 'generator': pg}), batch,
          family.fake(model, v({**params, 'generator': pg}), batch, key), key)[0])
      return d(params['discriminator']), g(params['generator'])

  with jax.set_mesh(mesh):
    out = jax.jit(f, in_shardings=(shardings['params'], shardings.get('model_state'), None))(
        state['params'], state.get('model_state', {}), batch)
  return jax.device_get(out)


@pytest.mark.parametrize('name', GANS)
def test_sharded_losses_equal_the_single_device_ones(name):
  """Both networks' losses and gradients on 8 faked devices equal those on one (the random
  windows, phase shifts and penalty points are drawn per row, whatever the layout)."""
  eight = _losses_and_grads(tiny_gan(name, mesh={'data': 8, 'model': 1}), jax.devices())
  one = _losses_and_grads(tiny_gan(name, mesh={'data': 1, 'model': 1}), jax.devices()[:1])
  for (loss8, grads8), (loss1, grads1) in zip(eight, one):
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5, atol=1e-6)
    for g8, g1 in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1)):
      np.testing.assert_allclose(g8, g1, atol=2e-5, rtol=1e-4)


def _step_of(c):
  family, model = models.family(c.model_name), models.create(c)
  mesh, rules = sharding.make_mesh(c.mesh), sharding.rules(c)
  init = train_gan.init_fn(c, family, model)
  shardings = state_lib.shardings(init, mesh, rules)
  batch_sh = sharding.batch_sharding(mesh, rules)
  step = train_gan.make_step(c, family, model, rules, shardings, batch_sh)
  return state_lib.create(init, shardings, c.seed), step, batch_sh, mesh


def test_the_step_updates_the_discriminator_first_then_the_generator():
  """One step equals its definition written out: the discriminator stepped on its loss, then
  the generator on its loss against the stepped discriminator."""
  c = tiny_gan('melgan')
  state, step, batch_sh, mesh = _step_of(c)
  family, model = models.family(c.model_name), models.create(c)
  batch = next(pipeline.make_batches(c.input, sharding=batch_sh))
  params = jax.device_get(state['params'])
  txs = train_gan.make_optimizers(c)
  with jax.set_mesh(mesh):
    new, metrics = step(state, batch)
  rng = state_lib.step_key(c.seed, 0)
  key = jax.random.fold_in(rng, 0)

  @jax.jit  # the definition, written out (compiled: op by op it took minutes)
  def reference(params, batch):
    x_fake = family.fake(model, {'params': params}, batch, jax.random.fold_in(key, 0))
    gd = jax.grad(lambda pd: family.discriminator_loss(
        model, {'params': {**params, 'discriminator': pd}}, batch, x_fake,
        jax.random.fold_in(key, 1))[0])(params['discriminator'])
    pd, _ = train_gan._update(txs['discriminator'], gd,
                              txs['discriminator'].init(params['discriminator']),
                              params['discriminator'])
    gg = jax.grad(lambda pg: family.generator_loss(
        model, {'params': {'generator': pg, 'discriminator': pd}}, batch,
        family.fake(model, {'params': {**params, 'generator': pg}}, batch,
                    jax.random.fold_in(key, 0)), jax.random.fold_in(rng, 1))[0])(
                        params['generator'])
    pg, _ = train_gan._update(txs['generator'], gg, txs['generator'].init(params['generator']),
                              params['generator'])
    return {'discriminator': pd, 'generator': pg}

  with jax.set_mesh(mesh):
    expected = jax.device_get(reference(params, batch))
  for a, b in zip(jax.tree.leaves(jax.device_get(new['params'])), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
  assert int(new['step']) == 1 and float(metrics['nonfinite_total']) == 0
  assert {'d_loss', 'g_loss', 'feature_matching', 'mel_l1', 'grad_norm_generator',
          'grad_norm_discriminator'} <= set(metrics)


def test_discriminator_steps_and_trainer_mistakes_are_one_line_errors(tmp_path):
  c = tiny_gan('wavegan', discriminator_steps=3)
  with pytest.raises(ValueError, match=r'config.discriminator_steps=3: expected a divisor of '
                     r'input.batch_size=16'):
    _step_of(c)
  c = tiny_gan('wavegan', discriminator_steps=4)  # slices of 4 rows over 8 devices
  with pytest.raises(ValueError, match=r'config.discriminator_steps=4: slices of 4 rows do not '
                     'divide'):
    _step_of(c)
  with pytest.raises(ValueError, match=r"config.model_name='melgan' is a GAN: train it with "
                     r'experiments/train_gan.py'):
    train.train_and_evaluate(tiny_gan('melgan'), str(tmp_path / 'wrong'))
  code, out = run_module('experiments.train_gan',
                         f'--config={config_path("wavenet")}:runlocal',
                         f'--workdir={tmp_path / "w"}')
  assert code == 1 and "config.model_name='wavenet' is not a GAN (no discriminator_loss): " \
      'train it with experiments/train.py' in out, out


@pytest.mark.slow
@pytest.mark.parametrize('name', ['melgan', 'hifigan'])
def test_the_mel_loss_falls_on_the_embedded_corpus(name):
  """40 steps on the embedded corpus: the mean mel L1 of the last 10 is below 0.9 x that of
  the first 5."""
  c = tiny_gan(name, total_steps=40, **{'optim.learning_rate': 1e-3,
                                       'optim_discriminator.learning_rate': 1e-3})
  mel = metric_over_steps(c, *_step_of(c), 'mel_l1', 40)
  assert np.mean(mel[-10:]) < 0.9 * np.mean(mel[:5]), mel


@pytest.mark.slow
def test_a_killed_gan_run_resumes_bit_identically(tmp_path):
  """WaveGAN (2 critic steps per generator step, the gradient penalty, phase shuffle): both
  networks and both optimisers end bit-identical after a SIGKILL and a resume."""
  flags_ = [f'--config.{k}={v}' for k, v in {
      'model.dim': 2, 'input.batch_size': 16, 'log_every_steps': 2,
      'evals.sample.every_steps': 0, 'evals.statistics.every_steps': 0, 'total_steps': 8,
      'checkpoint.every_steps': 2, 'checkpoint.keep': 20}.items()]
  a, b, _ = kill_and_resume(tmp_path, config_path('wavegan') + ':runlocal', flags_, 8,
                            trainer='experiments.train_gan')
  assert set(a['params']) == {'generator', 'discriminator'} == set(a['opt_state'])
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def gan_runs(tmp_path_factory):
  """2-step tiny MelGAN and SpecGAN runs through train_gan.py, with every evaluator on."""
  out = {}
  for name in ('melgan', 'specgan'):
    c = tiny_gan(name, total_steps=2)
    with c.unlocked():
      for entry in c.evals.values():
        entry.every_steps = 2
      if name == 'specgan':
        c.evals.statistics.clips = 4
      else:
        c.evals.resynthesis.update(clips=2, seconds=0.25, griffin_lim_iters=4)
    workdir = str(tmp_path_factory.mktemp(name))
    out[name] = (workdir, train_gan.train_and_evaluate(c, workdir))
  return out


def test_gan_runs_evaluate_and_sample_through_sample_py(gan_runs, tmp_path):
  workdir, last = gan_runs['melgan']
  assert np.isfinite(last['resynthesis_log_mel_l1'])
  assert 'resynthesis_griffin_lim_log_mel_l1' in last
  wav = str(tmp_path / 'in.wav')
  sf.write(wav, 0.1 * np.sin(np.arange(4096) * 0.05), 16000, subtype='PCM_16')
  paths = sample.sample(workdir, 2, None, str(tmp_path / 'voc'), mel_from=wav,
                        chunk_seconds=0.1)
  audio = [sf.read(p)[0] for p in paths]
  assert len(audio) == 2 and len(audio[0]) == 4096
  np.testing.assert_array_equal(audio[0], audio[1])  # deterministic: the same mel twice
  workdir, last = gan_runs['specgan']
  assert all(np.isfinite(last[f'statistics_{k}']) for k in ('mel_frechet', 'mean_spectrum_l1',
                                                            'level_db'))
  assert 'statistics_noise_mel_frechet' in last
  code, out = run_module('experiments.sample', f'--workdir={workdir}', '--num_samples=2',
                         '--seconds=1.5', f'--out={tmp_path / "clips"}')
  assert code == 0, out
  files = sorted(os.listdir(tmp_path / 'clips'))
  assert len(files) == 2
  clip, rate = sf.read(str(tmp_path / 'clips' / files[0]))
  assert rate == 16000 and len(clip) == 24000
