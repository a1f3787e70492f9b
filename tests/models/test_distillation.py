"""Distillation contracts (models/layers/distillation.py, Parallel WaveNet and ClariNet): the KL
terms against closed forms and Monte Carlo, the student's causality in its noise, its density
by the change of variables, window-by-window synthesis, and the teacher checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import common
from models import clarinet
from models import parallel_wavenet
from models.layers import distillation
from models.layers import flow_vocoder
from tests.conftest import config_path

HOP, MELS = 4, 3


def _student(cls=parallel_wavenet.Model, **kw):
  """A tiny student of 2 flows, its variables, and a mel of `frames` frames."""
  m = cls(**{**dict(hop_length=HOP, local_features=MELS, flow_layers=(2, 3), channels=8,
                    dilation_cycle=2), **kw})
  mel = jax.random.uniform(jax.random.key(1), (1, 6, MELS), minval=-8., maxval=0.)
  params = nn.unbox(m.init(jax.random.key(0), jnp.zeros((1, 6 * HOP)), mel,
                           method='inverse'))['params']
  # Flows start as the identity (zero output projections): give them a real shape.
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(p.size), p.shape),
                        params)
  return m, {'params': params}, mel


def test_gaussian_kl_closed_form_equals_monte_carlo():
  loc_q, log_s_q, loc_p, log_s_p = 0.3, -0.5, -0.2, 0.1
  closed = float(distillation.gaussian_kl(loc_q, log_s_q, loc_p, log_s_p))
  x = loc_q + np.exp(log_s_q) * jax.random.normal(jax.random.key(0), (400_000,))
  ratio = (distillation.log_density('gaussian', x, loc_q, log_s_q) -
           distillation.log_density('gaussian', x, loc_p, log_s_p))
  mc, se = float(jnp.mean(ratio)), float(jnp.std(ratio)) / np.sqrt(x.size)
  assert closed > 0.1
  assert abs(mc - closed) < 4 * se, (mc, closed, se)


def test_logistic_mixture_kl_estimator_is_unbiased():
  """A logistic q against a 3-component logistic mixture p: the true KL by quadrature on a fine
  grid, the estimator (4 draws per step) averaged over 50,000 steps."""
  loc_q, log_s_q = 0.9, -2.0
  logit_w = jnp.array([0.5, -0.3, 0.0])
  mu, log_s = jnp.array([-0.4, 0.2, 0.5]), jnp.array([-1.2, -0.7, -1.5])
  grid = jnp.linspace(loc_q - 60 * np.exp(log_s_q), loc_q + 60 * np.exp(log_s_q), 400_001)
  log_q = distillation.log_density('logistic', grid, loc_q, log_s_q)
  log_p = distillation.mixture_log_density(logit_w, mu, log_s, grid)
  true = float(jax.scipy.integrate.trapezoid(jnp.exp(log_q) * (log_q - log_p), grid))
  n = 50_000
  kl, _ = distillation.logistic_mixture_kl(
      jax.random.key(0), jnp.full((n,), loc_q), jnp.full((n,), log_s_q),
      jnp.broadcast_to(logit_w, (n, 3)), jnp.broadcast_to(mu, (n, 3)),
      jnp.broadcast_to(log_s, (n, 3)), samples=4)
  est, se = float(jnp.mean(kl)), float(jnp.std(kl)) / np.sqrt(n)
  assert true > 0.05
  assert abs(est - true) < 4 * se, (est, true, se)


@pytest.mark.parametrize('cls', [parallel_wavenet.Model, clarinet.Model])
def test_student_output_at_t_depends_on_noise_up_to_t(cls):
  m, v, mel = _student(cls)
  z0 = jax.random.logistic(jax.random.key(2), (6 * HOP,))
  jac = np.asarray(jax.jacfwd(lambda z: m.apply(v, z[None], mel, method='inverse')[0])(z0))
  assert np.all(np.triu(jac, 1) == 0)  # nothing from later noise
  assert np.all(np.diagonal(jac) > 0)  # x_t = z0_t exp(S_t) + M_t
  assert np.any(np.tril(jac, -1) != 0)  # and earlier noise counts
  # The reach: nothing from further back than reach_samples.
  t, s = np.meshgrid(np.arange(jac.shape[0]), np.arange(jac.shape[0]), indexing='ij')
  assert np.all(jac[s < t - m.reach_samples] == 0)


@pytest.mark.parametrize('cls', [parallel_wavenet.Model, clarinet.Model])
def test_student_density_is_the_change_of_variables(cls):
  m, v, mel = _student(cls)
  z0 = flow_vocoder.NOISES[m.latent_noise](jax.random.key(3), (1, 6 * HOP))
  x, loc, log_s = m.apply(v, z0, mel, method='flow')
  np.testing.assert_allclose(x, z0 * jnp.exp(log_s) + loc, rtol=1e-5, atol=1e-6)
  # forward recovers the noise, step by step, with log |det dz0/dx|.
  z_back, log_det = m.apply(v, x, mel, method='forward')
  np.testing.assert_allclose(z_back, z0, rtol=1e-4, atol=1e-4)
  jac = jax.jacfwd(lambda z: m.apply(v, z[None], mel, method='inverse')[0])(z0[0])
  _, log_abs = np.linalg.slogdet(np.asarray(jac, np.float64))
  np.testing.assert_allclose(log_det, -log_abs, rtol=1e-4)
  # log p(x) = sum_t log q_t(x_t), the per-step distributions of the flow.
  base = jnp.sum(distillation.log_density(m.distribution, z0, 0., 0.))
  np.testing.assert_allclose(jnp.sum(distillation.log_density(m.distribution, x, loc, log_s)),
                             base - log_abs, rtol=1e-4)


def test_generate_window_by_window_equals_one_pass():
  m, v, _ = _student()
  frames = 12 * m.context_frames
  mel = np.asarray(jax.random.uniform(jax.random.key(4), (2, frames, MELS), minval=-8.,
                                      maxval=0.))
  n = frames * HOP - 3
  windows = np.concatenate(list(parallel_wavenet.generate(
      m, v, jax.random.key(5), n, batch=2, cond={'mel': mel}, chunk_samples=HOP)), axis=1)
  whole = np.concatenate(list(parallel_wavenet.generate(
      m, v, jax.random.key(5), n, batch=2, cond={'mel': mel}, chunk_samples=n)), axis=1)
  assert windows.shape == (2, n)
  np.testing.assert_allclose(windows, whole, atol=1e-5)
  assert np.abs(windows).max() > 0.01


def test_teacher_checks_are_one_line():
  config = common.load(config_path('parallel_wavenet') + ':runlocal')
  import models  # pylint: disable=g-import-not-at-top
  student = models.create(config)
  assert dict(student.teacher)['output'] == 'mixture'
  with pytest.raises(ValueError, match=r"a logistic student distils a 'mixture' teacher"):
    distillation.teacher_of(student.clone(teacher=tuple(
        (k, 'gaussian' if k == 'output' else v) for k, v in student.teacher)))
  with pytest.raises(ValueError, match='model.teacher is empty'):
    distillation.teacher_of(student.clone(teacher=()))
  with config.unlocked():
    config.teacher.input.mel.n_mels = 40
  with pytest.raises(ValueError, match=r'config.teacher.input .* differs from config.input'):
    models.create(config)
  with pytest.raises(ValueError, match=r'model.distribution=.x.: expected one of logistic'):
    parallel_wavenet.Model(hop_length=HOP, local_features=MELS, distribution='x')
