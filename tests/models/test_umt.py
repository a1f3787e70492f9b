"""Universal Music Translation Network contracts (models/umt.py): gradient reversal, the pitch
modulation, each decoder's step vs parallel pass and causality, the encoder's receptive field,
the per-row decoders and the reversed confusion gradient of the loss, translate, generate, the
config and the sharded loss."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from data import specs
from experiments import sharding
from experiments import state as state_lib
from experiments.configs import common
import models
from models import umt
from models import wavenet
from models.layers import autoregressive
from tests.conftest import config_path

HOP = 16
# Encoder receptive field 1 + 2 (1 + 7) = 17 samples; decoder dilations 1, 2, 4, 8, 1.
SMALL = dict(num_classes=32, sample_rate=400, hop_length=HOP, num_domains=3, encoder_blocks=1,
             encoder_layers=3, encoder_channels=8, latent_dim=4, confusion_layers=2,
             confusion_channels=8, pitch_seconds=(0.1, 0.2),
             decoder=(('num_layers', 5), ('dilation_cycle', 4), ('residual_channels', 8),
                      ('gate_channels', 16), ('skip_channels', 8), ('local_channels', 8)))


@pytest.fixture(scope='module')
def setup():
  m = umt.Model(**SMALL)
  v = jax.jit(lambda r: nn.unbox(umt.init(m, r, {})))(jax.random.key(0))
  return m, v


def _batch(m, rows=4, length=96, ids=(0, 2, 2, 1)):
  codes = jax.random.randint(jax.random.key(1), (rows, length), 0, m.num_classes)
  return {'audio': codes, 'instrument': jnp.asarray(ids, jnp.int32)}


# ------------------------------------------------------------------------------------------------
# Gradient reversal.


@pytest.mark.parametrize('scale', [1e-2, 1., 3.5])
def test_gradient_reversal_flips_and_scales_the_gradient_exactly(scale):
  x = jax.random.normal(jax.random.key(0), (5, 3))
  w = jax.random.normal(jax.random.key(1), (5, 3))
  np.testing.assert_array_equal(umt.gradient_reversal(x, scale), x)  # forward: identity
  grad = jax.jit(jax.grad(lambda x: jnp.sum(w * umt.gradient_reversal(x, scale))))(x)
  identity = jax.grad(lambda x: jnp.sum(w * x))(x)
  np.testing.assert_array_equal(identity, w)
  np.testing.assert_allclose(grad, -scale * identity, rtol=1e-7)
  # The scale may be traced, and receives no gradient; the dtype stays.
  gx, gs = jax.grad(lambda x, s: jnp.sum(umt.gradient_reversal(x, s)), argnums=(0, 1))(
      x.astype(jnp.bfloat16), jnp.float32(scale))
  assert gx.dtype == jnp.bfloat16 and float(gs) == 0.
  np.testing.assert_allclose(gx.astype(jnp.float32), -scale, rtol=1e-2)


# ------------------------------------------------------------------------------------------------
# Pitch modulation.


def test_pitch_modulation_at_rate_one_is_the_identity():
  audio = jax.random.uniform(jax.random.key(0), (3, 1000), minval=-1., maxval=1.)
  p = umt.warp_positions(jax.random.key(1), 1000, 16000, semitones=0.)
  np.testing.assert_array_equal(p, np.arange(1000))
  np.testing.assert_array_equal(umt.pitch_modulate(jax.random.key(1), audio, 400, 0.), audio)


def _windows(rng, t, sr, semitones=0.5):
  """(start, end, rate) of the windows of `warp_windows` within [0, t)."""
  starts, rates = (np.asarray(a) for a in umt.warp_windows(rng, t, sr, semitones))
  ends = np.append(starts[1:], np.iinfo(np.int32).max)
  return [(max(s, 0), min(e, t), float(r)) for s, e, r in zip(starts, ends, rates) if s < t]


def test_warp_is_monotone_in_windows_of_the_drawn_lengths_and_rates():
  sr, t, semitones = 16000, 40000, 0.5
  lo, hi = 4000, 8000  # 0.25 and 0.5 s
  for seed in range(4):
    rng = jax.random.key(seed)
    starts, rates = (np.asarray(a) for a in umt.warp_windows(rng, t, sr, semitones))
    sizes = np.diff(starts)
    assert np.all((lo <= sizes) & (sizes <= hi)) and -sizes[0] < starts[0] <= 0
    assert starts[-1] + lo > t  # the windows cover the crop
    assert np.all(np.abs(12 * np.log2(rates)) <= semitones + 1e-6)
    assert len(set(rates.tolist())) == len(rates)  # each window draws its own rate
    p = np.asarray(umt.warp_positions(rng, t, sr, semitones))
    assert p[t // 2] == t // 2  # anchored at the centre
    assert np.all(np.diff(p) > 0)  # monotone
    windows = _windows(rng, t, sr, semitones)
    assert len(windows) >= 5
    for start, end, rate in windows:  # the slope within each window is its rate
      np.testing.assert_allclose((p[end - 1] - p[start]) / (end - 1 - start), rate, rtol=1e-5)
  assert not np.array_equal(umt.warp_positions(jax.random.key(0), t, sr),
                            umt.warp_positions(jax.random.key(1), t, sr))


def test_a_sines_frequency_changes_by_the_drawn_ratio_within_a_window():
  sr, t, f = 16000, 24000, 440.
  rng = jax.random.key(3)
  sine = jnp.sin(2 * np.pi * f * jnp.arange(t) / sr)[None]
  out = np.asarray(umt.pitch_modulate(rng, sine, sr))[0]
  measured = []
  for start, end, rate in _windows(jax.random.fold_in(rng, 0), t, sr):  # row 0's windows
    if end - start < 2000:
      continue
    seg = out[start + 5:end - 5]
    # Zero crossings, linearly interpolated: half periods of the local frequency.
    i = np.nonzero(np.sign(seg[:-1]) != np.sign(seg[1:]))[0]
    x = i + seg[i] / (seg[i] - seg[i + 1])
    freq = (len(x) - 1) / 2 / ((x[-1] - x[0]) / sr)
    np.testing.assert_allclose(freq / f, rate, rtol=1e-4)
    measured.append(rate)
  assert len(measured) >= 2 and max(abs(12 * np.log2(r)) for r in measured) > 0.05


# ------------------------------------------------------------------------------------------------
# The networks.


def test_parameters_are_stacked_per_domain_with_logical_axes(setup):
  m, v = setup
  assert set(v['params']) == {'encoder', 'confusion', 'decoders'}
  dec = umt.decoder(m)
  single = jax.eval_shape(lambda: nn.unbox(dec.init(
      jax.random.key(0), jnp.zeros((1, HOP), jnp.int32), jnp.zeros((1, 1, m.latent_dim)))))
  stacked = v['params']['decoders']
  assert jax.tree.structure(stacked) == jax.tree.structure(single['params'])
  for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(single['params'])):
    assert a.shape == (m.num_domains, *b.shape)
  boxed = jax.eval_shape(lambda r: umt.init(m, r, {}), jax.random.key(0))['params']
  specs_ = nn.get_partition_spec(boxed['decoders'])
  leaves = jax.tree.leaves(specs_, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec))
  assert leaves and all(tuple(s)[0] == 'domain' for s in leaves)
  assert tuple(nn.get_partition_spec(boxed['encoder'])['l0_conv_kernel']) == (
      None, 'embed', 'mlp')
  # Decoders are drawn independently.
  k = stacked['l0_conv_kernel']
  assert not np.allclose(k[0], k[1])


@pytest.mark.parametrize('domain', [0, 2])
def test_decoder_step_matches_parallel_pass(setup, domain):
  m, v = setup
  dec, t_len = umt.decoder(m), 70
  codes = jax.random.randint(jax.random.key(1), (2, t_len), 0, m.num_classes)
  audio = jax.random.uniform(jax.random.key(2), (2, t_len), minval=-1., maxval=1.)
  frames = umt.latent(m, v, audio)  # [2, 5, D]: the last frame partial
  assert frames.shape == (2, -(-t_len // HOP), m.latent_dim)
  dv = umt.decoder_variables(v, domain)
  p = wavenet.unboxed_params(dec, dv)
  ref = dec.apply(dv, codes, frames)
  cond = wavenet.layer_conditioning(dec, p, wavenet.condition(dec, p, frames), 'local')
  cond = cond[:, np.minimum((np.arange(t_len) + 1) // HOP, frames.shape[1] - 1)]

  @jax.jit
  def run(codes, cond):
    def body(cache, xs):
      return wavenet.step(dec, p, cache, *xs)[::-1]
    _, out = jax.lax.scan(body, wavenet.init_cache(dec, 2), (codes.T, jnp.moveaxis(cond, 1, 0)))
    return jnp.moveaxis(out, 0, 1)

  np.testing.assert_allclose(run(codes, cond), ref, rtol=1e-5, atol=1e-5)
  other = dec.apply(umt.decoder_variables(v, 1), codes, frames)
  assert not np.allclose(other, ref)  # each domain its own decoder


def test_decoder_is_causal(setup):
  m, v = setup
  dec, t0 = umt.decoder(m), 40
  codes = jax.random.randint(jax.random.key(1), (1, 80), 0, m.num_classes)
  frames = jax.random.normal(jax.random.key(2), (1, 5, m.latent_dim))
  dv = umt.decoder_variables(v, 1)
  base = dec.apply(dv, codes, frames)[0]
  moved = dec.apply(dv, codes.at[0, t0].set((codes[0, t0] + 1) % m.num_classes), frames)[0]
  changed = np.any(np.asarray(moved != base), axis=-1)
  assert not changed[:t0].any()
  assert changed[t0:t0 + dec.receptive_field].all()
  assert not changed[t0 + dec.receptive_field:].any()


def test_encoder_reads_within_its_receptive_field(setup):
  m, v = setup
  t_len, half = 96, m.encoder_receptive_field // 2
  assert m.encoder_receptive_field == 17
  audio = jax.random.uniform(jax.random.key(3), (t_len,), minval=-0.9, maxval=0.9)
  u = jax.random.normal(jax.random.key(4), (m.latent_dim,))
  jac = np.asarray(jax.jacrev(lambda a: umt.latent(m, v, a[None])[0] @ u)(audio))  # [F, T]
  for f in range(jac.shape[0]):
    lo, hi = f * HOP - half, (f + 1) * HOP - 1 + half
    s = np.arange(t_len)
    assert np.all(jac[f][(s < lo) | (s > hi)] == 0)  # nothing beyond the field
    assert np.all(jac[f][max(lo, 0):min(hi, t_len - 1) + 1] != 0)  # every sample within it
  assert np.any(jac[1][:HOP] != 0)  # non-causal: frame 1 reads before and after itself


# ------------------------------------------------------------------------------------------------
# The loss.


@functools.cache
def _loss(m):
  """The jitted loss of model `m`: (variables, batch with 'mask', rng or None) -> its triple."""
  return jax.jit(lambda v, b, rng: umt.loss(m, v, b, rng))


def _batch_with_mask(batch, mask=None):
  rows = batch['audio'].shape[0]
  return {**batch, 'mask': jnp.ones(rows, bool) if mask is None else jnp.asarray(mask)}


def _row_nll(m, v, batch, rng=None):
  """Each row's decoder NLL, from the loss with that row alone in the mask."""
  b = batch['audio'].shape[0]
  return np.array([_loss(m)(v, _batch_with_mask(batch, np.arange(b) == r), rng)[1]['nll']
                   for r in range(b)])


def test_loss_uses_each_rows_own_decoder(setup):
  m, v = setup
  batch = _batch(m)
  ids = np.asarray(batch['instrument'])
  base = _row_nll(m, v, batch, jax.random.key(5))
  for k in (2, 1):  # perturb decoder k only: exactly the rows of domain k move
    bumped = jax.tree.map(lambda a: a.at[k].multiply(1.5), v['params']['decoders'])
    moved = _row_nll(m, {'params': {**v['params'], 'decoders': bumped}}, batch,
                     jax.random.key(5))
    np.testing.assert_array_equal(moved[ids != k], base[ids != k])
    assert np.all(moved[ids == k] != base[ids == k])
  # Without modulation (rng None) a row's NLL is its decoder's, conditioned on its latent.
  plain = _row_nll(m, v, batch)
  frames = umt.latent(m, v, umt.to_audio(m, batch['audio']))
  dec, codes = umt.decoder(m), batch['audio']
  for r, k in enumerate(ids):
    out = dec.apply(umt.decoder_variables(v, k), codes[r:r + 1], frames[r:r + 1])
    want = jnp.mean(wavenet.nll(dec, out[:, :-1], codes[r:r + 1, 1:]))
    np.testing.assert_allclose(plain[r], want, rtol=1e-5)


def test_loss_metrics_and_mask(setup):
  m, v = setup
  batch = _batch(m)
  f = lambda b, rng=jax.random.key(0): _loss(m)(v, b, rng)
  loss, metrics, state = f(_batch_with_mask(batch))
  assert state == {}
  assert set(metrics) == {'nll', 'bits_per_sample', 'confusion_ce', 'confusion_accuracy',
                          'weight'}
  np.testing.assert_allclose(loss, metrics['nll'] + metrics['confusion_ce'], rtol=1e-6)
  np.testing.assert_allclose(metrics['bits_per_sample'], metrics['nll'] / np.log(2), rtol=1e-6)
  assert int(metrics['weight']) == 4 * 95
  assert 0 <= float(metrics['confusion_accuracy']) <= 1
  # Rows the mask drops count for nothing, whatever they hold.
  mask = [True, False, True, True]
  a = f(_batch_with_mask(batch, mask))
  other = {'audio': batch['audio'].at[1].set(0), 'instrument': batch['instrument'].at[1].set(0)}
  b = f(_batch_with_mask(other, mask))
  np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
  assert int(a[1]['weight']) == 3 * 95
  # The modulation follows the rng: another key, another encoder input.
  assert float(loss) != float(f(_batch_with_mask(batch), jax.random.key(1))[0])


def test_confusion_gradient_to_the_encoder_is_reversed(setup):
  m, v = setup
  batch = _batch(m)

  def grads(model):  # of the confusion term, and of the whole loss
    def f(p, what):
      loss, metrics, _ = umt.loss(model, {'params': p}, batch, jax.random.key(7))
      return metrics['confusion_ce'] if what == 'ce' else loss
    return jax.jit(lambda p: (jax.grad(f)(p, 'ce'), jax.grad(f)(p, 'loss')))(v['params'])

  lam = m.confusion_weight
  reversed_, total = grads(m)
  plain, _ = grads(m.clone(confusion_weight=-1.))  # -(-1) x: the gradient without the GRL
  for a, b in zip(jax.tree.leaves(reversed_['encoder']), jax.tree.leaves(plain['encoder'])):
    np.testing.assert_allclose(a, -lam * b, rtol=1e-4, atol=1e-9)
  assert any(np.any(a != 0) for a in jax.tree.leaves(reversed_['encoder']))
  # The classifier descends its cross-entropy: not reversed; the decoders do not see it.
  for a, b in zip(jax.tree.leaves(reversed_['confusion']), jax.tree.leaves(plain['confusion'])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
  assert all(np.all(a == 0) for a in jax.tree.leaves(reversed_['decoders']))
  # In the whole loss the classifier's gradient is its cross-entropy's alone.
  for a, b in zip(jax.tree.leaves(total['confusion']), jax.tree.leaves(reversed_['confusion'])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Translation and generation.


def test_translate_draws_each_row_from_its_target_decoder(setup):
  m, v = setup
  t_len = 50
  audio = np.asarray(jax.random.uniform(jax.random.key(8), (3, t_len), minval=-.5, maxval=.5))
  target = np.array([1, 0, 1])
  y = umt.translate(m, v, jax.random.key(9), audio, [0, 0, 0], target, chunk_samples=20)
  assert y.shape == (3, t_len) and y.dtype == np.float32
  assert np.all(np.isfinite(y)) and np.all(np.abs(y) <= 1)
  assert not np.array_equal(y[0], y[2])
  # Row b depends on its own audio and target only.
  other = umt.translate(m, v, jax.random.key(9), np.concatenate([audio[:1] * -1, audio[1:]]),
                        [0, 0, 0], np.array([2, 0, 1]), chunk_samples=20)
  np.testing.assert_array_equal(other[1:], y[1:])
  assert not np.array_equal(other[0], y[0])
  # At temperature 0 each row is the argmax of its target decoder's parallel pass, conditioned
  # on its latent frames, from the silent first sample.
  y0 = umt.translate(m, v, jax.random.key(9), audio, [0, 0, 0], target, temperature=0.)
  dec = umt.decoder(m)
  codes = autoregressive.encode(dec, y0)
  np.testing.assert_array_equal(codes[:, 0], m.num_classes // 2)
  frames = umt.latent(m, v, jnp.asarray(audio))
  for r, k in enumerate(target):
    out = dec.apply(umt.decoder_variables(v, int(k)), codes[r:r + 1], frames[r:r + 1])
    np.testing.assert_array_equal(codes[r, 1:], np.argmax(out[0, :-1], axis=-1))


def test_translate_and_generate_errors(setup):
  m, v = setup
  with pytest.raises(ValueError, match='draws audio from a source recording: use '
                     'experiments/translate.py'):
    umt.generate(m, v, jax.random.key(0), 10, batch=1)
  with pytest.raises(ValueError, match=r'target \[3\]: expected 1 ids in 0\.\.2'):
    umt.translate(m, v, jax.random.key(0), np.zeros((1, 8)), [0], [3])
  with pytest.raises(ValueError, match=r'expected float audio \[B, T\]'):
    umt.translate(m, v, jax.random.key(0), np.zeros(8), [0], [0])
  with pytest.raises(ValueError, match='model.encoder_kernel=2'):
    umt.Model(encoder_kernel=2)
  with pytest.raises(ValueError, match='instrument'):
    umt.loss(m, v, {'audio': jnp.zeros((1, 32), jnp.int32)}, None)


# ------------------------------------------------------------------------------------------------
# The config, and the loss over a mesh.


def _params(config) -> dict:
  family, model = models.family(config.model_name), models.create(config)
  shapes = jax.eval_shape(lambda r: nn.unbox(family.init(
      model, r, specs.zeros_batch(config.input, 1))), jax.random.key(0))['params']
  return {k: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(t)) for k, t in shapes.items()}


def test_configs_build_the_stated_models():
  c = common.load(config_path('umt') + ':runlocal')
  assert c.input.instruments and 'sample' not in c.evals
  m = models.create(c)
  assert (m.num_domains, m.hop_length, m.sample_rate, m.num_classes) == (
      len(specs.INSTRUMENTS), 512, 16000, 256)
  assert umt.decoder(m).receptive_field == 1025 and m.encoder_receptive_field == 129
  n = _params(c)
  assert sum(n.values()) == 653_541  # 0.65 M, as the config's docstring says
  paper = common.load(config_path('umt'))
  n = _params(paper)
  assert (n['encoder'], n['confusion'], n['decoders'] // 5) == (1_982_528, 27_205, 4_729_280)


def test_sharded_loss_equals_one_device():
  c = common.load(config_path('umt') + ':runlocal')
  with c.unlocked():
    c.model.update(num_domains=2, encoder_layers=2, encoder_channels=8, latent_dim=4,
                   confusion_layers=1, confusion_channels=8)
    c.model.decoder.update(num_layers=2, residual_channels=8, gate_channels=16,
                           skip_channels=8, local_channels=8)
    c.input.crop_samples = 1024
  family, model = models.family(c.model_name), models.create(c)
  rng = np.random.default_rng(0)
  batch = {'audio': rng.integers(0, 256, (8, 1024)).astype(np.int32),
           'instrument': rng.integers(0, model.num_domains, (8,)).astype(np.int32)}

  init = state_lib.train_init(family, model, optax.sgd(0.), specs.zeros_batch(c.input, 1))
  params = state_lib.create(init, None, c.seed)['params']  # initialised once, placed twice

  def loss_and_grads(devices, data):
    c.mesh.data = data
    mesh, rules = sharding.make_mesh(c.mesh, devices=devices), sharding.rules(c)
    shardings = state_lib.shardings(init, mesh, rules)['params']
    b = jax.device_put(batch, sharding.batch_sharding(mesh, rules))

    def f(params, batch):
      with nn.logical_axis_rules(rules):
        return jax.value_and_grad(lambda p: family.loss(model, {'params': p}, batch,
                                                        jax.random.key(0))[0])(params)

    with jax.set_mesh(mesh):
      out = jax.jit(f, in_shardings=(shardings, None))(jax.device_put(params, shardings), b)
    return jax.device_get(out)

  assert jax.device_count() == 8
  loss8, grads8 = loss_and_grads(jax.devices(), 8)
  loss1, grads1 = loss_and_grads(jax.devices()[:1], 1)
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  for g8, g1 in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1)):
    np.testing.assert_allclose(g8, g1, atol=2e-5, rtol=1e-4)
