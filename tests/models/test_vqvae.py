"""VQ-VAE levels and their prior: the quantiser (straight-through gradient, EMA against its
closed form, dead-code restarts), the encoder's hop and receptive field, each prior's step
against its parallel pass, the windowed hierarchical decoder against one sampler call, the
sharded loss, a falling loss, and the one-line errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import train_vqvae
from experiments.configs import common
import models
from models import vqvae
from models import vqvae_prior
from models import wavenet
from models.vqvae import hierarchy
from models.vqvae import quantizer
from tests.conftest import VQVAE_TINY_DECODER
from tests.conftest import assert_sharded_loss_equals_one_device
from tests.conftest import config_path
from tests.conftest import metric_over_steps
from tests.conftest import tiny_vqvae
from tests.conftest import train_step_of


def _level(**kwargs):
  return vqvae.Model(**{'strides': (2, 4), 'channels': 8, 'res_blocks': 2, 'codebook_size': 16,
                        'code_dim': 4, 'decoder': tuple(sorted(VQVAE_TINY_DECODER.items())),
                        **kwargs})


def _book(rng, k=6, d=3):
  r1, r2, r3 = jax.random.split(rng, 3)
  return {'embedding': jax.random.normal(r1, (k, d)),
          'cluster_size': jax.random.uniform(r2, (k,), minval=0.5, maxval=3.),
          'embed_sum': jax.random.normal(r3, (k, d))}


def test_nearest_codes_and_the_straight_through_gradient():
  z = jax.random.normal(jax.random.key(0), (2, 5, 3))
  e = jax.random.normal(jax.random.key(1), (6, 3))
  d = np.sum((np.asarray(z)[..., None, :] - np.asarray(e)) ** 2, -1)
  np.testing.assert_array_equal(quantizer.nearest(e, z), np.argmin(d, -1))
  w = jax.random.normal(jax.random.key(2), z.shape)
  z_q, codes, _ = quantizer.quantize(e, z)
  np.testing.assert_allclose(z_q, np.asarray(e)[np.asarray(codes)], atol=1e-6)
  # d/dz sum(w z_q) = w: the decoder's gradient reaches the encoder unchanged...
  g_z, g_e = jax.grad(lambda z, e: jnp.sum(w * quantizer.quantize(e, z)[0]), (0, 1))(z, e)
  np.testing.assert_allclose(g_z, w, atol=1e-6)
  np.testing.assert_array_equal(g_e, 0.)  # ...and none reaches the (EMA-kept) codebook
  # The commitment term mean_d (z - sg(e))^2 pulls z only: 2 (z - e) / D.
  g_z = jax.grad(lambda z: jnp.sum(quantizer.quantize(e, z)[2]))(z)
  np.testing.assert_allclose(g_z, 2. * (z - z_q) / 3., atol=1e-5)


def test_ema_update_equals_the_closed_form():
  book = _book(jax.random.key(0))
  z = np.asarray(jax.random.normal(jax.random.key(1), (3, 4, 3)))
  codes = np.array([[0, 1, 1, 4], [4, 4, 0, 2], [1, 1, 1, 1]])
  w = np.array([[1.] * 4, [1.] * 4, [0.] * 4])  # the third row masked out
  g, k = 0.9, 6
  n_k = np.array([np.sum(w[codes == j]) for j in range(k)])
  s_k = np.stack([np.sum(z[codes == j] * w[codes == j][:, None], 0) for j in range(k)])
  n = g * np.asarray(book['cluster_size']) + (1 - g) * n_k
  m = g * np.asarray(book['embed_sum']) + (1 - g) * s_k
  smoothed = (n + quantizer.EPS) / (n.sum() + k * quantizer.EPS) * n.sum()
  new = quantizer.ema_update(book, jnp.asarray(z), jnp.asarray(codes), jnp.asarray(w), g)
  np.testing.assert_allclose(new['cluster_size'], n, rtol=1e-6)
  np.testing.assert_allclose(new['embed_sum'], m, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new['embedding'], m / smoothed[:, None], rtol=1e-5, atol=1e-6)


def test_dead_codes_restart_at_encodings_of_the_batch():
  book = _book(jax.random.key(0))
  book['cluster_size'] = jnp.array([2., 0.1, 3., 0.5, 0.99, 1.5])  # codes 1, 3, 4 dead
  z = jax.random.normal(jax.random.key(1), (2, 7, 3)) + 10.  # far from every code
  new, dead = quantizer.restart_dead(book, z, jax.random.key(2), threshold=1.)
  assert float(dead) == pytest.approx(0.5)
  rows = np.asarray(z).reshape(-1, 3)
  for k in range(6):
    if k in (1, 3, 4):
      assert np.any(np.all(np.isclose(rows, new['embedding'][k]), axis=1)), k
      assert float(new['cluster_size'][k]) == 1.
      np.testing.assert_allclose(new['embed_sum'][k], new['embedding'][k])
    else:
      for key in book:
        np.testing.assert_array_equal(new[key][k], book[key][k])
  # A fresh codebook is all dead: the first training step starts it from the batch.
  fresh = quantizer.init_state(jax.random.key(3), 4, 3)
  assert float(quantizer.restart_dead(fresh, z, jax.random.key(4), 1.)[1]) == 1.


def test_perplexity_counts_the_codes_in_use():
  assert float(quantizer.perplexity(jnp.array([5., 0., 0., 0.]))) == pytest.approx(1.)
  assert float(quantizer.perplexity(jnp.array([2., 2., 2., 2.]))) == pytest.approx(4.)


@pytest.mark.parametrize('strides,res_blocks', [((2, 4), 2), ((2, 2, 2), 1), ((4,), 0)])
def test_the_encoder_has_its_documented_hop_and_receptive_field(strides, res_blocks):
  """Code f of z_e [B, T / hop, D] depends on exactly the input positions f hop + lo .. f hop
  + hi, (lo, hi) = Model.receptive_field (gradients of one-hot inputs)."""
  model = _level(strides=strides, res_blocks=res_blocks)
  hop, (lo, hi) = model.hop, model.receptive_field
  assert hop == np.prod(strides)
  t = 16 * hop
  variables = model.init(jax.random.key(0), jnp.zeros((1, t), jnp.int32))
  onehot = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (1, t), 0, 256), 256)
  z = model.apply(variables, onehot, method='encode')
  assert z.shape == (1, t // hop, 4)
  f = 8
  g = jax.grad(lambda x: jnp.sum(model.apply(variables, x, method='encode')[0, f]))(onehot)
  touched = np.flatnonzero(np.abs(np.asarray(g[0])).sum(-1) > 0)
  assert touched.min() == f * hop + lo and touched.max() == f * hop + hi, (touched, lo, hi)


def test_the_configs_hops_chain_as_documented():
  hops = []
  for level in (1, 2, 3):
    c = common.load(config_path('vqvae') + f':level={level}')
    hops.append(int(np.prod(c.model.strides)))
  assert hops == [8, 4, 4]  # audio hops 8, 32, 128 (Jukebox's)
  prior = common.load(config_path('vqvae') + ':prior')
  assert prior.input.crop_samples == 8192 * 128  # a context of 8,192 top codes: 65.5 s


def _prior_model(family: str) -> vqvae_prior.Model:
  level = tuple(sorted(dict(strides=(2, 2), channels=8, res_blocks=1, codebook_size=32,
                            code_dim=4, decoder=tuple(VQVAE_TINY_DECODER.items()),
                            num_classes=256, encoding='mu_law', sample_rate=16000).items()))
  net = {'sparse_transformer': dict(num_layers=2, embed_dim=16, num_heads=2, mlp_dim=32,
                                    max_length=32, block=4, summary=2),
         'wavenet': dict(num_layers=4, dilation_cycle=4, residual_channels=8, gate_channels=16,
                         skip_channels=8)}[family]
  return vqvae_prior.Model(prior=family, prior_model=tuple(sorted(net.items())), levels=(level,))


@pytest.mark.parametrize('family', vqvae_prior.PRIORS)
def test_each_prior_steps_as_its_parallel_pass(family):
  """The prior over a 32-code vocabulary: teacher-forced steps of its family's sampler give the
  logits of the parallel pass."""
  model = _prior_model(family)
  net = vqvae_prior.net_of(model)
  assert net.num_classes == 32
  codes = jax.random.randint(jax.random.key(0), (2, 24), 0, 32)
  variables = nn.unbox(vqvae_prior.init(model, jax.random.key(1),
                                        {'audio': jnp.zeros((1, 24 * 4), jnp.int32)}))
  nv = vqvae_prior.net_variables(variables)
  parallel = net.apply(nv, codes)
  fam = models.family(family)
  p = fam.unboxed_params(net, nv)
  cache, out = fam.init_cache(net, 2), []
  for t in range(codes.shape[1]):
    logits, cache = fam.step(net, p, cache, codes[:, t])
    out.append(logits)
  np.testing.assert_allclose(jnp.stack(out, 1), parallel, atol=2e-5, rtol=1e-5)


def test_the_windowed_level_decoder_draws_what_one_sampler_call_draws():
  """Level codes arriving in pieces (frame windows with offsets, lookahead of one frame) give
  the codes below that one `sample_codes` over every frame gives: the upsampler's step against
  the whole sequence."""
  level = _level(strides=(2, 2), res_blocks=1)
  variables = nn.unbox(level.init(jax.random.key(0), jnp.zeros((2, 64), jnp.int32)))
  frames = np.asarray(jax.random.randint(jax.random.key(1), (2, 15), 0, 16))
  rng = jax.random.key(2)
  local = np.asarray(variables['vq']['codebook']['embedding'])[frames]
  whole = np.concatenate(list(wavenet.sample_codes(
      vqvae.decoder_of(level), {'params': variables['params']['wavenet']}, rng,
      15 * 4 - 1, batch=2, local=local)), axis=1)
  decoder = hierarchy.LevelDecoder(level, variables, rng, 1.0, 2, chunk_samples=5)
  pieces = [decoder.push(frames[:, a:b], final=b == 15) for a, b in
            ((0, 1), (1, 2), (2, 6), (6, 7), (7, 15))]
  assert pieces[0].shape[1] == 0  # frame 0 waits for frame 1, its right neighbour
  got = np.concatenate(pieces, axis=1)
  assert got[:, 0].tolist() == [128, 128]  # the start code below
  np.testing.assert_array_equal(got[:, 1:], whole)
  assert decoder.frames.shape[1] <= 2  # only the frames still needed are kept


def test_level_loss_state_and_metrics():
  """The loss updates the codebook (EMA and restarts) and keeps the frozen levels; masked rows
  count for nothing."""
  c = tiny_vqvae('level=1')
  model, family = models.create(c), models.family(c.model_name)
  batch = {'audio': jax.random.randint(jax.random.key(0), (4, 512), 0, 256)}
  variables = nn.unbox(family.init(model, jax.random.key(1), batch))
  loss, metrics, state = family.loss(model, variables, batch, jax.random.key(2))
  assert set(state) == {'vq'}
  # A fresh codebook restarts from the batch: all but the codes used > 1 / (1 - decay) times.
  assert float(metrics['dead_fraction']) >= 0.75
  assert not np.allclose(state['vq']['codebook']['embedding'],
                         variables['vq']['codebook']['embedding'])
  assert float(loss) == pytest.approx(float(metrics['nll'] + 0.25 * metrics['commitment']),
                                      rel=1e-5)
  own = {'params': variables['params'], 'vq': variables['vq']}
  codes = vqvae.encode_codes(model, own, batch['audio'])
  counts = np.bincount(np.asarray(codes).ravel(), minlength=16).astype(np.float32)
  assert float(metrics['perplexity']) == pytest.approx(
      float(quantizer.perplexity(jnp.asarray(counts))), rel=1e-5)
  masked = dict(batch, mask=jnp.array([True, True, False, False]))
  _, m2, _ = family.loss(model, variables, masked, jax.random.key(2))
  _, m3, _ = family.loss(model, variables, {'audio': batch['audio'][:2]}, jax.random.key(2))
  assert float(m2['nll']) == pytest.approx(float(m3['nll']), rel=1e-5)
  assert float(m2['weight']) == 2 * 511


def _with_random_levels(c, below: int):
  """`c` with config.levels the tiny level configs 1..below (as train_vqvae sets them)."""
  with c.unlocked():
    for i in range(1, below + 1):
      run = tiny_vqvae(f'level={i}')
      with run.unlocked():
        del run['levels']
      c.levels[f'level{i}'] = run
  return c


@pytest.mark.parametrize('variant,below', [('level=1', 0), ('level=2', 1), ('prior,levels=2', 2)])
def test_sharded_loss_and_gradients_equal_one_device(variant, below):
  assert_sharded_loss_equals_one_device(
      lambda mesh: _with_random_levels(tiny_vqvae(variant, mesh=mesh), below))


@pytest.mark.slow
def test_level_loss_falls_on_the_embedded_corpus():
  """30 steps of level 1 (its decoder 16 channels wide): the mean NLL of the last 5 is half a
  nat below that of the first 5 (measured: 5.57 -> 4.61)."""
  c = tiny_vqvae('level=1', total_steps=30, **{
      'optim.learning_rate': 3e-2, 'optim.warmup_steps': 2, 'optim.decay': 'constant',
      'model.decoder.residual_channels': 16, 'model.decoder.gate_channels': 32,
      'model.decoder.skip_channels': 32})
  nll = metric_over_steps(c, *train_step_of(c), 'nll', 30)
  assert np.mean(nll[-5:]) < np.mean(nll[:5]) - 0.5, nll


def test_bad_configs_are_one_line_errors(tmp_path):
  with pytest.raises(ValueError, match='choose a level'):
    common.load(config_path('vqvae') + ':level=1,prior')
  with pytest.raises(ValueError, match='level=4: expected 1, 2 or 3'):
    common.load(config_path('vqvae') + ':level=4')
  with pytest.raises(ValueError, match=r'config.below_workdir is not set: .* level 1'):
    train_vqvae.with_levels(tiny_vqvae('level=2'))
  with pytest.raises(ValueError, match='level 1 trains on audio'):
    train_vqvae.with_levels(tiny_vqvae('level=1', below_workdir=str(tmp_path)))
  with pytest.raises(ValueError, match='no checkpoint to load'):
    train_vqvae.with_levels(tiny_vqvae('level=2', below_workdir=str(tmp_path)))
  with pytest.raises(ValueError, match='a prior needs the levels'):
    vqvae_prior.Model()
  with pytest.raises(ValueError, match='codebook_size=12: expected a power of 2'):
    _level(codebook_size=12)
  level = _level()
  variables = level.init(jax.random.key(0), jnp.zeros((1, 64), jnp.int32))
  with pytest.raises(ValueError, match='60 input positions at level 1: expected a multiple'):
    level.apply(variables, jnp.zeros((1, 60), jnp.int32), method='encode')
  with pytest.raises(ValueError, match=r'expected float audio \[B, P\] of at least 8'):
    list(vqvae.generate(level, variables, jax.random.key(0), 2, prompt=np.zeros((1, 5))))
  with pytest.raises(ValueError, match='expected 1, one per stage'):
    list(vqvae.generate(level, variables, jax.random.key(0), 2, prompt=np.zeros((1, 16)),
                        temperature=(1., 1., 1.)))


@pytest.mark.parametrize('family', vqvae_prior.PRIORS)
def test_hierarchical_sampling_does_not_depend_on_chunks(family):
  """The prior's codes, then the level's decoder, to audio: the same samples whether rendered
  in chunks of 40 samples or at once, and per stream whatever the number of streams; a prompt
  is continued."""
  model = _prior_model(family)
  variables = nn.unbox(vqvae_prior.init(model, jax.random.key(1),
                                        {'audio': jnp.zeros((1, 64), jnp.int32)}))
  gen = lambda n, **kw: np.concatenate(list(vqvae_prior.generate(
      model, variables, jax.random.key(3), n, **kw)), axis=1)
  a = gen(150, batch=2, chunk_samples=40, temperature=(1., 0.9))
  b = gen(150, batch=2, chunk_samples=1000, temperature=(1., 0.9))
  assert a.shape == (2, 150) and a.dtype == np.float32 and np.abs(a).max() <= 1.
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a[1:], gen(150, batch=1, first_stream=1, temperature=(1., 0.9)))
  assert not np.array_equal(a, gen(150, batch=2, temperature=(1., 0.5)))
  prompt = np.sin(np.arange(2 * 37) * 0.1).reshape(2, 37).astype(np.float32) * 0.5
  c = gen(30, prompt=prompt, chunk_samples=16)
  assert c.shape == (2, 30)
  with pytest.raises(ValueError, match='expected 2, one per stage'):
    gen(10, temperature=(1., 1., 1.))


def test_encode_quantize_decode():
  """The autoencoder's functions: audio codes -> encodings -> codes -> audio codes drawn by
  the decoder, over the level's span."""
  level = _level()
  variables = nn.unbox(vqvae.init(level, jax.random.key(0), {'audio': jnp.zeros((1, 64),
                                                                                 jnp.int32)}))
  audio = jax.random.randint(jax.random.key(1), (2, 64), 0, 256)
  z = vqvae.encode(level, variables, audio)
  assert z.shape == (2, 8, 4)
  z_q, codes = vqvae.quantize(level, variables, z)
  assert z_q.shape == z.shape and codes.shape == (2, 8) and codes.max() < 16
  drawn = vqvae.decode(level, variables, jax.random.key(2), np.asarray(codes))
  assert drawn.shape == (2, 64) and drawn.dtype == np.int32
  assert drawn.min() >= 0 and drawn.max() < 256 and drawn[:, 0].tolist() == [128, 128]
