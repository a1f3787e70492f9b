"""The flow layers and the three flow vocoders: inverses, log-determinants against brute-force
Jacobians, WaveFlow's causality along h, ActNorm's data-dependent start, the likelihood's
conventions, and window-by-window sampling without seams."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import flowavenet
from models import waveflow
from models import waveglow
from models.layers import flow_vocoder
from models.layers import flows

HOP, MELS = 16, 3
# Tiny versions of each model (hop 16, 3 mels) whose Jacobians are cheap to build.
TINY = {
    'waveglow': lambda **kw: waveglow.Model(
        hop_length=HOP, local_features=MELS, num_flows=4, group=4, early_every=2, early_size=1,
        channels=8, num_layers=2, upsample_strides=(4, 4), **kw),
    'flowavenet': lambda **kw: flowavenet.Model(
        hop_length=HOP, local_features=MELS, num_blocks=3, flows_per_block=2, split_every=2,
        channels=8, num_layers=2, upsample_strides=(4, 4), **kw),
    'waveflow': lambda **kw: waveflow.Model(
        hop_length=HOP, local_features=MELS, height=4, num_flows=4, channels=8, num_layers=3,
        **kw),
}
FAMILY = {'waveglow': waveglow, 'flowavenet': flowavenet, 'waveflow': waveflow}


def _family(name):
  return FAMILY[name]


def _jiggle(tree, scale=0.1, seed=3):
  """Every parameter moved off its init (the couplings' zero outputs make identities)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [
      a + scale * jax.random.normal(k, a.shape, a.dtype) if jnp.issubdtype(a.dtype, jnp.floating)
      else a for a, k in zip(leaves, keys)])


def _trained_like(name, t=64, batch=2):
  """(model, variables with ActNorm initialised and jiggled params, x [B, T], cond)."""
  model, family = TINY[name](), _family(name)
  x = 0.3 * jax.random.normal(jax.random.key(0), (batch, t))
  cond = {'mel': jax.random.normal(jax.random.key(1), (batch, t // HOP, MELS)) - 3.}
  variables = nn.unbox(jax.jit(lambda b: family.init(model, jax.random.key(2), b))(
      {'audio': x * 0, **cond}))
  _, _, state = jax.jit(lambda v, b: family.loss(model, v, b, jax.random.key(4)))(
      variables, {'audio': x, **cond})
  return model, {'params': _jiggle(variables['params']), **state}, x, cond


def _method(module, method):
  """module.apply(variables, *args, method=method), jitted (eager flows dispatch op by op)."""
  return jax.jit(lambda variables, *args: module.apply(variables, *args, method=method))


def _brute_log_det(f, x, *args):
  """log |det df/dx| of f(x, *args): [N] -> [N] from the full Jacobian."""
  return jax.jit(lambda x, *a: jnp.linalg.slogdet(jax.jacfwd(f)(x, *a))[1])(x, *args)


# ------------------------------------------------------------------------------------------------
# Layers.

LAYERS = {
    'conv1x1': (flows.InvertibleConv1x1(4), False),
    'conv1x1-lu': (flows.InvertibleConv1x1(4, lu=True, seed=1), False),
    'actnorm': (flows.ActNorm(4), False),
    'coupling': (flows.AffineCoupling(4, channels=8, num_layers=2), True),
    'coupling-odd': (flows.AffineCoupling(3, channels=8, num_layers=2), True),
}


@pytest.mark.parametrize('name', list(LAYERS))
def test_layer_inverts_and_its_log_det_is_the_jacobians(name):
  layer, conditioned = LAYERS[name]
  c = layer.features
  x = jax.random.normal(jax.random.key(0), (2, 6, c)) * 2. + 1.
  cond = (jax.random.normal(jax.random.key(1), (2, 6, 3)),) if conditioned else ()
  variables = layer.init(jax.random.key(2), x, *cond, method='forward')
  if 'actnorm' in variables:  # the data-dependent start, then learned offsets
    _, state = layer.apply(variables, x, method='forward', mutable=['actnorm'])
    variables = {**variables, **state}
  variables = {**variables, 'params': _jiggle(variables['params'], 0.3)}
  z, log_det = _method(layer, 'forward')(variables, x, *cond)
  assert z.shape == x.shape and log_det.shape == (2,)
  assert not np.allclose(z, x)
  back = _method(layer, 'inverse')(variables, z, *cond)
  np.testing.assert_allclose(back, x, atol=1e-4)
  f = lambda v, *a: layer.apply(variables, v.reshape(1, 6, c), *a,
                                method='forward')[0].reshape(-1)
  for row in range(2):
    np.testing.assert_allclose(
        log_det[row], _brute_log_det(f, x[row].reshape(-1), *(a[row:row + 1] for a in cond)),
        rtol=1e-4, atol=1e-4)


def test_lu_conv_starts_as_a_rotation_and_plain_conv_from_the_key():
  x = jnp.ones((1, 1, 4))
  lu = flows.InvertibleConv1x1(4, lu=True)
  w, log_det = lu.apply(lu.init(jax.random.key(0), x, method='forward'), method='weight')
  np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-5)
  assert abs(float(log_det)) < 1e-5
  plain = flows.InvertibleConv1x1(4)
  w0, _ = plain.apply(plain.init(jax.random.key(0), x, method='forward'), method='weight')
  w1, _ = plain.apply(plain.init(jax.random.key(1), x, method='forward'), method='weight')
  np.testing.assert_allclose(w0 @ w0.T, np.eye(4), atol=1e-5)
  assert np.linalg.det(w0) > 0 and not np.allclose(w0, w1)


def test_actnorm_starts_from_the_first_batch_and_keeps_it():
  layer = flows.ActNorm(3)
  x = jax.random.normal(jax.random.key(0), (4, 50, 3)) * jnp.array([0.1, 1., 5.]) + 2.
  variables = layer.init(jax.random.key(1), x * 0, method='forward')
  assert not bool(variables['actnorm']['initialized'])
  (z, _), state = layer.apply(variables, x, method='forward', mutable=['actnorm'])
  np.testing.assert_allclose(jnp.mean(z, axis=(0, 1)), 0., atol=1e-5)
  np.testing.assert_allclose(jnp.std(z, axis=(0, 1)), 1., atol=1e-4)
  assert bool(state['actnorm']['initialized'])
  # Initialised: another batch no longer moves the statistics.
  variables = {**variables, **state}
  (_, _), again = layer.apply(variables, x * 3., method='forward', mutable=['actnorm'])
  np.testing.assert_array_equal(again['actnorm']['loc'], state['actnorm']['loc'])


def test_squeeze_groups_consecutive_steps():
  x = jnp.arange(24.).reshape(1, 12, 2)
  s = flows.squeeze(x, 3)
  assert s.shape == (1, 4, 6)
  np.testing.assert_array_equal(s[0, 1], x[0, 3:6].reshape(-1))
  np.testing.assert_array_equal(flows.unsqueeze(s, 3), x)
  with pytest.raises(ValueError, match='12 steps do not squeeze into groups of 5'):
    flows.squeeze(x, 5)


def test_upsampler_fills_each_frames_hop_from_it_and_the_next():
  up = flows.Upsampler((2, 4))
  mel = jax.random.normal(jax.random.key(0), (1, 6, 3))
  variables = up.init(jax.random.key(1), mel)
  out = up.apply(variables, mel)
  assert out.shape == (1, 48, 3)
  # Samples of frame 2 ([16, 24)) move with frames 2 and 3 (through two stages: 2, 3, 4).
  grad = jax.grad(lambda m: jnp.sum(up.apply(variables, m)[0, 16:24]))(mel)
  touched = np.flatnonzero(np.abs(np.asarray(grad[0])).sum(-1))
  assert touched.tolist() == [2, 3, 4]


def test_waveflow_layer_is_causal_along_h():
  """Row r of z depends on rows <= r of x only, and on row r through x_r's own scale."""
  layer = flows.AutoregressiveFlow2D(height=5, cond_features=2, channels=8, num_layers=3)
  x = jax.random.normal(jax.random.key(0), (1, 5, 7))
  cond = jax.random.normal(jax.random.key(1), (1, 5, 7, 2))
  variables = layer.init(jax.random.key(2), x, cond, method='forward')
  variables = {'params': _jiggle(variables['params'], 0.3)}
  forward = lambda v: layer.apply(variables, v.reshape(1, 5, 7), cond,
                                  method='forward')[0].reshape(-1)
  jac = jax.jit(jax.jacfwd(forward))(x.reshape(-1)).reshape(5, 7, 5, 7)
  by_rows = np.abs(np.asarray(jac)).sum(axis=(1, 3))  # [row of z, row of x]
  assert np.all(np.triu(by_rows, 1) == 0)
  assert np.all(by_rows[np.tril_indices(5)] > 0)
  # And the inverse (row by row, through the cache) recovers the rows.
  z, log_det = _method(layer, 'forward')(variables, x, cond)
  np.testing.assert_allclose(_method(layer, 'inverse')(variables, z, cond), x, atol=1e-4)
  np.testing.assert_allclose(log_det[0], _brute_log_det(forward, x.reshape(-1)), rtol=1e-4,
                             atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Models.


@pytest.mark.parametrize('name', list(TINY))
def test_model_inverts_and_its_log_det_is_the_jacobians(name):
  model, variables, x, cond = _trained_like(name)
  z, log_det = _method(model, 'forward')(variables, x, cond['mel'])
  assert z.shape == x.shape and log_det.shape == (2,)
  np.testing.assert_allclose(_method(model, 'inverse')(variables, z, cond['mel']), x, atol=1e-4)
  f = lambda v, mel: model.apply(variables, v[None], mel, method='forward')[0][0]
  np.testing.assert_allclose(log_det[0], _brute_log_det(f, x[0], cond['mel'][:1]), rtol=1e-4,
                             atol=1e-3)


def test_waveflow_rows_are_folded_samples_and_the_latent_is_laid_out_in_time():
  """A change to samples [32, 48) moves z only near them: z is time-local, at the reach of
  the flow (tiny WaveFlow: 4 flows x 7 columns x height 4 = 112 samples each side)."""
  model, variables, x, cond = _trained_like('waveflow', t=512, batch=1)
  assert model.reach_samples == 4 * 4 * 7
  forward = _method(model, 'forward')
  z0, _ = forward(variables, x, cond['mel'])
  z1, _ = forward(variables, x.at[:, 32:48].add(0.5), cond['mel'])
  moved = np.flatnonzero(np.abs(np.asarray(z1 - z0)[0]) > 0)
  assert moved.min() >= 0 and moved.max() < 48 + model.reach_samples + model.height
  assert moved.max() >= 48  # it does reach past the change


def test_identity_flow_likelihood_is_the_gaussians_plus_the_bin_width():
  """At init WaveGlow's couplings are identities and its 1x1 convolutions rotations, so z is a
  rotation of x, log_det = 0, and the NLL is that of a standard Gaussian on the dequantised
  audio, converted to a 16-bit bin: + log(32768) nats."""
  model = TINY['waveglow']()
  x = 0.2 * jax.random.normal(jax.random.key(0), (2, 64))
  cond = {'mel': jnp.zeros((2, 4, MELS))}
  variables = nn.unbox(waveglow.init(model, jax.random.key(1), {'audio': x, **cond}))
  loss, metrics, state = waveglow.loss(model, variables, {'audio': x, **cond}, None)
  xd = x + 0.5 / 32768
  want = float(jnp.mean(0.5 * xd ** 2) + 0.5 * math.log(2 * math.pi) + math.log(32768))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics['bits_per_sample'], want / math.log(2), rtol=1e-5)
  assert abs(float(metrics['log_det'])) < 1e-5 and state == {}
  assert int(metrics['weight']) == 128
  # Padding rows (mask False) do not count.
  masked = {'audio': x, **cond, 'mask': jnp.array([True, False])}
  _, m, _ = waveglow.loss(model, variables, masked, None)
  assert int(m['weight']) == 64
  want0 = float(jnp.mean(0.5 * xd[0] ** 2) + 0.5 * math.log(2 * math.pi) + math.log(32768))
  np.testing.assert_allclose(m['nll'], want0, rtol=1e-5)


def test_flowavenet_loss_initialises_actnorm_and_returns_the_state():
  model = TINY['flowavenet']()
  x = 0.3 * jax.random.normal(jax.random.key(0), (4, 64))
  cond = {'mel': jnp.zeros((4, 4, MELS))}
  variables = nn.unbox(jax.jit(lambda b: flowavenet.init(model, jax.random.key(1), b))(
      {'audio': x * 0, **cond}))
  assert not any(bool(v['initialized']) for v in variables['actnorm'].values())
  _, metrics, state = jax.jit(lambda v, b: flowavenet.loss(model, v, b, jax.random.key(2)))(
      variables, {'audio': x, **cond})
  flags = [v['initialized'] for v in state['actnorm'].values()]
  assert len(flags) == 6 and all(bool(f) for f in flags)
  # Unit-variance latents after the data-dependent start: the prior term is near 0.5 + log 2pi/2.
  assert abs(float(metrics['prior']) - (0.5 + 0.5 * math.log(2 * math.pi))) < 0.2


@pytest.mark.parametrize('name', ['waveglow', 'flowavenet', 'waveflow'])
def test_sampling_in_windows_has_no_seams(name):
  """Windows of 4 x context frames with context on both sides give what one pass over the whole
  mel gives: the window edges leave no trace."""
  model, variables, _, _ = _trained_like(name)
  frames = 6 * model.context_frames + 5
  mel = {'mel': jax.random.normal(jax.random.key(5), (2, frames, MELS)) - 3.}
  n = frames * HOP - 7
  rng = jax.random.key(6)
  whole = np.concatenate(list(_family(name).generate(
      model, variables, rng, n, batch=2, cond=mel, chunk_samples=frames * HOP)), axis=1)
  windowed = list(_family(name).generate(model, variables, rng, n, batch=2, cond=mel,
                                         chunk_samples=HOP))
  assert [w.shape for w in windowed] == [(2, HOP)] * (n // HOP) + [(2, n % HOP)]
  np.testing.assert_allclose(np.concatenate(windowed, axis=1), whole, atol=2e-5)
  # The latent of a frame comes from its own key: the same as one pass's z, inverted.
  z = flow_vocoder.latent(rng, 0, frames, HOP, jnp.arange(2), 1.)
  x = np.clip(_method(model, 'inverse')(variables, z, mel['mel']), -1, 1)
  np.testing.assert_allclose(whole, x[:, :n], atol=2e-5)


def test_temperature_scales_the_latent():
  model, variables, _, cond = _trained_like('waveglow')
  draw = lambda t: np.concatenate(list(waveglow.generate(
      model, variables, jax.random.key(0), 64, batch=2, cond=cond, temperature=t)), axis=1)
  z = _method(model, 'forward')(variables, jnp.asarray(draw(0.)), cond['mel'])[0]
  np.testing.assert_allclose(z, 0., atol=1e-4)  # sigma 0: the flow's image of z = 0
  assert np.std(draw(1.)) > np.std(draw(0.5))


def test_flow_errors_are_one_line():
  model, variables, x, cond = _trained_like('waveglow')
  with pytest.raises(ValueError, match=r"conditioned on \('mel',\); the batch has no \['mel'\]"):
    waveglow.forward(model, variables, x, {})  # the family's forward / inverse read `cond`
  with pytest.raises(ValueError, match='mel vocoder: it does not continue a prompt'):
    next(waveglow.generate(model, variables, jax.random.key(0), 10, batch=2, cond=cond,
                           prompt=np.zeros((2, 5))))
  with pytest.raises(ValueError, match=r"conditioned on \('mel',\); the batch has no \['mel'\]"):
    next(waveglow.generate(model, variables, jax.random.key(0), 10, batch=2, cond={}))
  with pytest.raises(ValueError, match='num_samples=65: the mel of 4 frames covers 64'):
    next(waveglow.generate(model, variables, jax.random.key(0), 65, batch=2, cond=cond))
  with pytest.raises(ValueError, match='62 samples: a multiple of 4 expected'):
    waveglow.loss(model, variables, {'audio': x[:, :62], **cond}, None)
  with pytest.raises(ValueError, match="a flow needs float audio"):
    waveglow.loss(model, variables, {'audio': jnp.zeros((2, 64), jnp.int32), **cond}, None)
  with pytest.raises(ValueError, match=r"model.encoding='mu_law'.*expected 'float'"):
    waveglow.Model(hop_length=16, local_features=3, encoding='mu_law')
  with pytest.raises(ValueError, match=r'upsample_strides=\(4, 2\): their product must be the '
                     'hop, 16'):
    waveglow.Model(hop_length=16, local_features=3, upsample_strides=(4, 2))
  with pytest.raises(ValueError, match='hop 12 is not a multiple of the flow.s granularity 8'):
    waveglow.Model(hop_length=12, local_features=3)
  with pytest.raises(ValueError, match='leave 0 of 8 channels; a coupling needs 2'):
    waveglow.Model(hop_length=16, local_features=3, num_flows=13, early_every=3,
                   early_size=2)
