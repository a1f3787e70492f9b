"""Blow: the flow's inverse and log-determinant against a brute-force Jacobian, the
hyperconditioning, translation's overlap-add, the likelihood's conventions, and sampling by
stream and chunk."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import common
import models
from models import blow
from tests.conftest import assert_sharded_loss_equals_one_device
from tests.conftest import config_path

FRAME = 16


def _tiny(**kw):
  """2 blocks of 2 flows (of 2 and 4 channels), couplings of 4 channels, 3 domains."""
  return blow.Model(num_domains=3, frame_samples=FRAME, num_blocks=2, flows_per_block=2,
                    channels=4, embedding_dim=4, **kw)


def _jiggle(tree, scale=0.1, seed=3):
  """Every parameter moved off its init (zero coupling outputs ignore the domain)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [a + scale * jax.random.normal(k, a.shape, a.dtype)
                                      for a, k in zip(leaves, keys)])


@functools.cache
def _trained_like(t=2 * FRAME, batch=2):
  """(model, variables with ActNorm started by the loss and jiggled params, x [B, T], ids)."""
  model = _tiny()
  x = 0.3 * jax.random.normal(jax.random.key(0), (batch, t))
  ids = jnp.arange(batch, dtype=jnp.int32) % 3
  variables = nn.unbox(jax.jit(lambda b: blow.init(model, jax.random.key(2), b))(
      {'audio': x * 0, 'instrument': ids}))
  _, _, state = jax.jit(lambda v, b: blow.loss(model, v, b, jax.random.key(4)))(
      variables, {'audio': x, 'instrument': ids})
  return model, {'params': _jiggle(variables['params']), **state}, x, ids


def _method(module, method):
  return jax.jit(lambda variables, *args: module.apply(variables, *args, method=method))


@functools.cache
def _flow(model):
  """The family's (forward, inverse) under ids [B], jitted."""
  return (jax.jit(lambda v, x, i: blow.forward(model, v, x, {'instrument': i})),
          jax.jit(lambda v, z, i: blow.inverse(model, v, z, {'instrument': i})))


def test_model_inverts_and_its_log_det_is_the_jacobians():
  model, variables, x, ids = _trained_like()
  forward, inverse = _flow(model)
  z, log_det = forward(variables, x, ids)
  assert z.shape == x.shape and log_det.shape == (2,)
  assert not np.allclose(z, x)
  np.testing.assert_allclose(inverse(variables, z, ids), x, atol=1e-4)
  f = lambda v, i: model.apply(variables, v[None], i[None], method='forward')[0][0]
  brute = jax.jit(jax.vmap(lambda v, i: jnp.linalg.slogdet(jax.jacfwd(f)(v, i))[1]))(x, ids)
  np.testing.assert_allclose(log_det, brute, rtol=1e-4, atol=1e-3)


def test_the_coupling_inverts_and_its_log_det_is_the_jacobians():
  layer = blow.HyperCoupling(4, channels=8)
  x = jax.random.normal(jax.random.key(0), (2, 6, 4)) * 2. + 1.
  emb = jax.random.normal(jax.random.key(1), (2, 5))
  variables = layer.init(jax.random.key(2), x, emb, method='forward')
  variables = {'params': _jiggle(variables['params'], 0.3)}
  z, log_det = _method(layer, 'forward')(variables, x, emb)
  assert not np.allclose(z[..., 2:], x[..., 2:]) and np.array_equal(z[..., :2], x[..., :2])
  np.testing.assert_allclose(_method(layer, 'inverse')(variables, z, emb), x, atol=1e-4)
  f = lambda v, e: layer.apply(variables, v.reshape(1, 6, 4), e[None],
                               method='forward')[0].reshape(-1)
  brute = jax.jit(jax.vmap(lambda v, e: jnp.linalg.slogdet(jax.jacfwd(f)(v, e))[1]))(
      x.reshape(2, -1), emb)
  np.testing.assert_allclose(log_det, brute, rtol=1e-4, atol=1e-4)


def test_the_domain_conditions_every_coupling():
  """The same audio under another instrument has another z and log-det; inverting under the
  wrong instrument does not give the audio back. At init (zero coupling outputs) the domain
  does not matter yet."""
  model, variables, x, _ = _trained_like()
  forward, inverse = _flow(model)
  fwd = lambda v, i: forward(v, x, jnp.array([i, i]))
  (z0, ld0), (z1, ld1) = fwd(variables, 0), fwd(variables, 1)
  assert np.abs(np.asarray(z0 - z1)).max() > 1e-2 and np.all(np.abs(ld0 - ld1) > 1e-3)
  back = inverse(variables, z0, jnp.array([1, 1]))
  assert np.abs(np.asarray(back - x)).max() > 1e-2
  fresh = {**variables, 'params': nn.unbox(blow.init(
      model, jax.random.key(2), {'audio': x, 'instrument': jnp.array([0, 0])}))['params']}
  np.testing.assert_allclose(fwd(fresh, 0)[0], fwd(fresh, 2)[0], atol=1e-6)
  # Every flow has its own adapter.
  adapters = [k for k in variables['params'] if k.startswith('couplings')]
  assert len(adapters) == 4


@pytest.mark.parametrize('t', [2 * FRAME, 75, 7])
def test_translating_to_the_same_instrument_returns_the_input(t):
  """Frames at a hop of half a frame, periodic Hann windows: the halves sum to 1, so each
  sample comes back (the ends too, through the padding), whatever the length."""
  model, variables, _, _ = _trained_like()
  x = np.asarray(0.5 * jax.random.normal(jax.random.key(7), (2, t))).clip(-1, 1)
  ids = np.array([0, 2], np.int32)
  y = blow.translate(model, variables, jax.random.key(0), x, ids, ids)
  assert y.shape == x.shape and y.dtype == np.float32
  np.testing.assert_allclose(y, x, atol=1e-4)
  w = blow.hann(FRAME)
  np.testing.assert_allclose(w[:FRAME // 2] + w[FRAME // 2:], 1., atol=1e-7)


def test_translation_changes_the_audio_within_range():
  model, variables, _, _ = _trained_like()
  x = np.asarray(jax.random.uniform(jax.random.key(8), (3, 100), minval=-1., maxval=1.))
  source, target = np.array([0, 1, 2]), np.array([1, 2, 2])
  y = blow.translate(model, variables, None, x, source, target)
  assert y.shape == (3, 100) and y.dtype == np.float32 and np.all(np.abs(y) <= 1.)
  assert np.abs(y[:2] - x[:2]).max() > 1e-2  # another instrument
  np.testing.assert_allclose(y[2], x[2], atol=1e-4)  # row by row: 2 -> 2 is the input
  # Temperature scales z: at 0 every frame is the target's image of z = 0, whatever the input.
  y0 = blow.translate(model, variables, None, x, source, target, temperature=0.)
  y0b = blow.translate(model, variables, None, -x, source, target, temperature=0.)
  np.testing.assert_allclose(y0, y0b, atol=1e-6)
  # An inverse that overflows (a latent far from the target's) still gives audio in range.
  wild = blow.translate(model, variables, None, x, source, target, temperature=1e30)
  assert np.all(np.isfinite(wild)) and np.all(np.abs(wild) <= 1.)
  with pytest.raises(ValueError, match=r'target=\[1, 3, 2\]: expected ids in \[0, 3\)'):
    blow.translate(model, variables, None, x, source, np.array([1, 3, 2]))
  with pytest.raises(ValueError, match=r'source has shape \(2,\); expected \(3,\)'):
    blow.translate(model, variables, None, x, source[:2], target)


def test_loss_is_the_gaussians_in_16_bit_bins_over_frames():
  """Frames: a row of two frames scores the mean of the two frames as rows. Masked rows do
  not count; bits = nats / log 2 per 16-bit sample; the gradient reaches the embedding and
  every adapter."""
  model, variables, x, ids = _trained_like(t=2 * FRAME, batch=2)
  loss = jax.jit(lambda v, b: blow.loss(model, v, b, None))
  nll, metrics, state = loss(variables, {'audio': x, 'instrument': ids})
  assert np.isfinite(nll) and set(state) == {'actnorm'}
  np.testing.assert_allclose(metrics['bits_per_sample'], nll / math.log(2), rtol=1e-6)
  assert int(metrics['weight']) == 2 * 2 * FRAME
  z, log_det = _flow(model)[0](variables, x.reshape(4, FRAME) + 0.5 / 32768,
                               jnp.repeat(ids, 2))
  want = (0.5 * jnp.sum(z ** 2) + 0.5 * z.size * math.log(2 * math.pi) - jnp.sum(log_det)) / (
      z.size) + math.log(32768)
  np.testing.assert_allclose(nll, want, rtol=1e-5)
  as_rows, _, _ = loss(variables, {'audio': x.reshape(4, FRAME),
                                   'instrument': jnp.repeat(ids, 2)})
  np.testing.assert_allclose(nll, as_rows, rtol=1e-5)
  _, m, _ = loss(variables, {'audio': x, 'instrument': ids, 'mask': jnp.array([True, False])})
  first, _, _ = loss(variables, {'audio': x[:1], 'instrument': ids[:1]})
  assert int(m['weight']) == 2 * FRAME
  np.testing.assert_allclose(m['nll'], first, rtol=1e-5)

  grads = jax.jit(jax.grad(lambda p: blow.loss(model, {**variables, 'params': p},
                                               {'audio': x, 'instrument': ids},
                                               jax.random.key(1))[0]))(variables['params'])
  assert np.all(np.isfinite(np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])))
  assert np.all(np.abs(grads['embedding'][:2]).max(axis=1) > 0)  # the batch's instruments
  assert np.all(grads['embedding'][2] == 0)  # no row of instrument 2
  for name, g in grads.items():
    if name.startswith('couplings'):
      for k in ('adapt_w_kernel', 'adapt_b_kernel'):
        assert np.abs(g[k]).max() > 0, (name, k)


def test_loss_starts_actnorm_and_takes_short_crops_as_one_frame():
  model = _tiny()
  x = 0.3 * jax.random.normal(jax.random.key(0), (4, FRAME // 2))
  batch = {'audio': x, 'instrument': jnp.array([0, 1, 2, 0])}
  variables = nn.unbox(blow.init(model, jax.random.key(1), batch))
  assert not any(bool(v['initialized']) for v in variables['actnorm'].values())
  _, metrics, state = jax.jit(lambda v, b: blow.loss(model, v, b, jax.random.key(2)))(
      variables, batch)
  assert len(state['actnorm']) == 4 and all(bool(v['initialized'])
                                            for v in state['actnorm'].values())
  assert int(metrics['weight']) == 4 * FRAME // 2
  with pytest.raises(ValueError, match='20 samples: a multiple of the frame, 16, expected'):
    blow.loss(model, variables, {'audio': jnp.zeros((2, 20)), 'instrument': jnp.zeros(2, int)},
              None)
  with pytest.raises(ValueError, match="the batch has no 'instrument' .set "
                     'config.input.instruments=True'):
    blow.loss(model, variables, {'audio': x}, None)
  with pytest.raises(ValueError, match='a flow needs float audio'):
    blow.loss(model, variables, {**batch, 'audio': jnp.zeros((4, 16), jnp.int32)}, None)


def test_generate_draws_streams_and_chunks_alike():
  model, variables, _, _ = _trained_like()
  cond = {'instrument': np.array([0, 1, 2], np.int32)}
  rng = jax.random.key(5)
  draw = lambda **kw: np.concatenate(list(blow.generate(model, variables, rng, 70, **kw)), 1)
  chunks = list(blow.generate(model, variables, rng, 70, batch=3, cond=cond, chunk_samples=16))
  assert [c.shape for c in chunks] == [(3, 16)] * 4 + [(3, 6)]
  whole = np.concatenate(chunks, axis=1)
  assert whole.dtype == np.float32 and np.all(np.abs(whole) <= 1)
  np.testing.assert_array_equal(whole, draw(batch=3, cond=cond, chunk_samples=1000))
  for i in range(3):  # stream i alone draws what it drew beside the others
    alone = draw(batch=1, cond={'instrument': cond['instrument'][i:i + 1]}, first_stream=i,
                 chunk_samples=16)
    np.testing.assert_array_equal(alone, whole[i:i + 1])
  assert not np.allclose(whole[0], whole[1])
  # A frame is the inverse of its own key's latent under the stream's instrument.
  z = jax.random.normal(jax.random.fold_in(jax.random.fold_in(rng, 1), 2), (FRAME,))
  x = _flow(model)[1](variables, z[None], jnp.array([2]))
  np.testing.assert_allclose(whole[2, FRAME:2 * FRAME], np.clip(x[0], -1, 1), atol=1e-5)
  # Temperature 0: every frame is the instrument's image of z = 0.
  cold = draw(batch=3, cond=cond, temperature=0.)
  np.testing.assert_allclose(cold[:, :FRAME], cold[:, FRAME:2 * FRAME], atol=1e-6)
  with pytest.raises(ValueError, match='does not continue a prompt'):
    draw(batch=3, cond=cond, prompt=np.zeros((3, 4)))
  with pytest.raises(ValueError, match="the batch has no 'instrument'"):
    draw(batch=3, cond={})
  with pytest.raises(ValueError, match=r"cond\['instrument'\] has shape \(3,\); expected \(2,\)"):
    draw(batch=2, cond=cond)


def test_model_errors_are_one_line():
  with pytest.raises(ValueError, match=r"model.encoding='mu_law'.*expected 'float'"):
    _tiny(encoding='mu_law')
  with pytest.raises(ValueError, match='model.frame_samples=36: expected a multiple of '
                     r'2\^num_blocks = 8'):
    blow.Model(frame_samples=36, num_blocks=3, channels=8)
  with pytest.raises(ValueError, match='model.channels=6: expected a multiple of 4'):
    blow.Model(frame_samples=32, num_blocks=3, channels=6)


def test_configs_build_the_papers_and_the_laptops_model():
  full = common.load(config_path('blow'))
  model = models.create(full)
  assert (model.frame_samples, model.num_blocks, model.flows_per_block, model.channels,
          model.embedding_dim, model.num_domains) == (4096, 8, 12, 512, 128, 5)
  assert full.input.instruments and full.input.crop_samples == 4096
  local = models.create(common.load(config_path('blow') + ':runlocal'))
  assert (local.frame_samples, local.num_blocks, local.flows_per_block, local.channels) == (
      2048, 4, 3, 64)
  assert models.family('blow').Model.conditions == ('instrument',)


def test_sharded_loss_equals_one_device():
  def config_of(mesh):
    c = common.load(config_path('blow') + ':runlocal')
    c.model.update(frame_samples=256, num_blocks=2, flows_per_block=2, channels=8,
                   embedding_dim=8)
    c.input.crop_samples = 512
    c.mesh.update(mesh)
    return c
  assert_sharded_loss_equals_one_device(config_of)
