"""Sparse Transformer contracts (models/sparse_transformer/): causality and the attention key
sets, windows past max_length, step vs layer and the cached sampler, bf16, sharded heads, and
the real training, evaluation and sampling jobs on the embedded corpus."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from data import specs
from experiments import checkpoint
from experiments import evaluate
from experiments import sample
from experiments import train
from experiments.configs import common
from experiments.configs import sparse_transformer as sparse_transformer_config
import models
from models import sparse_transformer as st
from models.sparse_transformer import model as st_model
from tests.conftest import config_path
from tests.conftest import loss_and_grads
from tests.conftest import tiny_sparse_transformer as tiny

CONFIG = config_path('sparse_transformer')
# A window of 8 blocks of 8: 'strided' reaches 7 positions back, 'summary' keeps 2 per block.
SMALL = dict(num_classes=32, max_length=64, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64,
             block=8, summary=2, positions='rope')
T = 150  # past the 64-position window: windows start at 0, 32, 64 and 96
CONFIGS = {'strided-interleave': dict(combine='interleave'),
           'fixed-interleave': dict(attention='fixed', combine='interleave'),
           'strided-heads': dict(combine='heads'),
           'fixed-merged-factorized': dict(attention='fixed', combine='merged',
                                           positions='factorized')}


def _setup(config='strided-heads', batch=2, length=T, **kw):
  """(model, variables, codes [B, T])."""
  m = st.Model(**{**SMALL, **CONFIGS[config], **kw})
  codes = jax.random.randint(jax.random.key(1), (batch, length), 0, m.num_classes)
  return m, nn.unbox(m.init(jax.random.key(0), codes[:, :8])), codes


@functools.cache
def _jit_apply(m: st.Model):
  return jax.jit(m.apply)


def _apply(m, v, codes):
  """m.apply compiled once per model and shape (tests share them: compiling dominates)."""
  return _jit_apply(m)(v, codes)


def _input_jacobian(m, v, codes) -> np.ndarray:
  """[T out, T in]: whether output i (projected on a random vector) moves with the embedded
  input at j, by differentiating through everything after the embedding."""
  u = jax.random.normal(jax.random.key(3), (m.num_classes,))
  embed = st_model.embed

  def outputs(delta):  # [T, E] added to the embedded input -> [T]
    with pytest.MonkeyPatch.context() as mp:
      mp.setattr(st_model, 'embed', lambda *a: embed(*a) + delta)
      return m.apply(v, codes)[0] @ u

  jac = jax.jit(jax.jacrev(outputs))(jnp.zeros((codes.shape[1], m.embed_dim)))
  return np.asarray(jnp.abs(jac).sum(-1) != 0)  # [T, T]


@pytest.mark.parametrize('config', ['strided-interleave', 'fixed-interleave'])
def test_causal_and_two_interleaved_layers_see_the_whole_past(config):
  m, v, codes = _setup(config, batch=1, length=64)
  attn = m.attention
  assert m.patterns == ((st.ATTENTIONS[attn][0],), (st.ATTENTIONS[attn][1],))
  # Exactly zero from every later input; non-zero from every earlier one (the factorisation
  # connects all j <= i in two layers).
  np.testing.assert_array_equal(_input_jacobian(m, v, codes), np.tri(64, dtype=bool))


@pytest.mark.parametrize('config', CONFIGS)
def test_blockwise_attention_equals_dense_under_the_mask(config):
  # The same model with attention.dense under attention.mask of each layer's patterns: the
  # model attends over exactly the key sets it claims, in every window.
  m, v, codes = _setup(config)
  ref = st.Model(**{**SMALL, **CONFIGS[config], 'attention_impl': 'reference'})
  np.testing.assert_allclose(_apply(m, v, codes), _apply(ref, v, codes), atol=2e-5, rtol=2e-5)


def test_windows_past_max_length():
  """Position t is computed in the window [w, w + 64) of window_start(t), from its position 0."""
  m, v, codes = _setup()
  assert m.receptive_field == 64
  assert [st.window_start(m, t) for t in (0, 63, 64, 95, 96, 127, 128, 149)] == [
      0, 0, 32, 32, 64, 64, 96, 96]
  out = np.asarray(_apply(m, v, codes))  # [B, T, Q]
  for t in (0, 40, 63, 64, 80, 95, 96, 128, 149):
    w = st.window_start(m, t)
    np.testing.assert_allclose(out[:, t], _apply(m, v, codes[:, w:w + 64])[:, t - w],
                               atol=2e-5, rtol=2e-5)
  # Changing one code moves exactly the outputs whose window holds it, at or after it.
  t0 = 70
  moved = _apply(m, v, codes.at[0, t0].set((codes[0, t0] + 1) % m.num_classes))
  changed = np.any(np.asarray(moved[0]) != out[0], axis=-1)
  t = np.arange(T)
  expected = (t >= t0) & (np.array([st.window_start(m, i) for i in t]) <= t0)
  np.testing.assert_array_equal(changed, expected)


@pytest.mark.parametrize('config', ['strided-heads', 'fixed-merged-factorized'])
def test_step_matches_layer(config):
  # 150 positions: the steps slide the window at 64, 96 and 128.
  m, v, codes = _setup(config)
  p = st.unboxed_params(m, v)
  ref = _apply(m, v, codes)  # [B, T, Q]

  @jax.jit
  def run(cache, codes):  # teacher-forced steps from `cache` -> logits [B, n, Q]
    _, out = jax.lax.scan(lambda c, x: st.step(m, p, c, x)[::-1], cache, codes.T)
    return jnp.moveaxis(out, 0, 1)

  np.testing.assert_allclose(run(st.init_cache(m, 2), codes), ref, atol=1e-4, rtol=1e-4)
  # A prompt of 100 codes prefilled in one pass (window [64, 128)), then 50 steps.
  cache = st.prefill(m, p, codes[:, :100])
  assert int(cache['t']) == 100 and int(cache['pos']) == 36
  np.testing.assert_allclose(run(cache, codes[:, 100:]), ref[:, 100:], atol=1e-4, rtol=1e-4)


def _generate(m, v, rng, n, **kw):
  return np.concatenate(list(st.sample_codes(m, v, rng, n, **kw)), axis=1)


def test_sample_codes_is_the_naive_sampler_whatever_the_chunks():
  m, v, codes = _setup()
  prompt = np.asarray(codes[:, :60])  # then 90 new codes: windows slide at 64, 96 and 128
  a = _generate(m, v, jax.random.key(7), 90, prompt=prompt, chunk_samples=45)
  b = _generate(m, v, jax.random.key(7), 90, prompt=prompt, chunk_samples=90)
  assert a.shape == (2, 90) and a.dtype == np.int32
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, st.naive_generate(m, v, jax.random.key(7), 90, prompt))
  assert a.min() >= 0 and a.max() < m.num_classes
  assert not np.array_equal(a, _generate(m, v, jax.random.key(8), 90, prompt=prompt,
                                         chunk_samples=45))
  # Streams draw by their number: stream 1 alone, numbered 1, draws what it drew beside 0.
  c = _generate(m, v, jax.random.key(7), 90, prompt=prompt[1:], chunk_samples=90,
                first_stream=1)
  np.testing.assert_array_equal(c, a[1:])
  # Temperature 0: the argmax of the parallel forward over prompt and continuation.
  z = _generate(m, v, jax.random.key(7), 90, prompt=prompt, chunk_samples=45, temperature=0.)
  out = _apply(m, v, jnp.concatenate([prompt, z], axis=1))
  np.testing.assert_array_equal(z, np.argmax(out[:, 59:-1], axis=-1))


def test_bfloat16_compute_keeps_float32_params_and_logits():
  m, v, codes = _setup()
  m16 = st.Model(**{**SMALL, 'dtype': 'bfloat16'})
  shapes = nn.unbox(jax.eval_shape(m16.init, jax.random.key(0), codes[:, :8]))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))
  out32, out16 = _apply(m, v, codes), _apply(m16, v, codes)
  assert out16.dtype == jnp.float32
  loss = lambda out: float(st.nll(m, out[:, :-1], codes[:, 1:]).mean())
  assert np.isfinite(loss(out16)) and abs(loss(out16) - loss(out32)) < 0.02
  assert st.init_cache(m16, 2)['k'][0].dtype == jnp.bfloat16  # the sampler's caches


def test_bad_config_and_inputs():
  with pytest.raises(ValueError, match=r"model\.attention='nope'.*strided, fixed, dense"):
    st.Model(attention='nope')
  with pytest.raises(ValueError, match=r'model\.combine'):
    st.Model(combine='both')
  with pytest.raises(ValueError, match=r'model\.max_length=100: expected a multiple of '
                     r'model\.block=64'):
    st.Model(max_length=100, block=64)
  with pytest.raises(ValueError, match=r'model\.embed_dim=30'):
    st.Model(embed_dim=30, num_heads=4)
  m, v, _ = _setup()
  assert m.conditions == () and m.conditioning({'pianoroll': np.zeros((1, 2, 88))}) == {}
  with pytest.raises(ValueError, match=r'prompt of shape \(4,\)'):
    next(st.generate(m, v, jax.random.key(0), 4, prompt=np.zeros((4,), np.float32)))
  with pytest.raises(ValueError, match=r'model\.positions=rope rotates pairs'):
    st.Model(embed_dim=12, num_heads=4, positions='rope')


# ------------------------------------------------------------------------------------------------
# Through the shared jobs.


def test_paper_config_and_sweep():
  c = common.load(CONFIG)
  data = specs.dataset(c.input.dataset)
  assert (data.sample_rate, data.segment_samples) == (12000, 65536)
  assert c.input.crop_samples == c.model.max_length == 65536 and c.model.remat
  m = models.create(c)
  shapes = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 256), jnp.int32))
  assert abs(sum(x.size for x in jax.tree.leaves(nn.unbox(shapes))) / 152e6 - 1) < 0.01
  variant = common.load(f'{CONFIG}:bf16,attention=fixed,combine=interleave')
  assert (variant.model.dtype, variant.model.attention, variant.model.combine) == (
      'bfloat16', 'fixed', 'interleave')
  for overrides in sparse_transformer_config.sweep():
    with c.unlocked():
      for key, value in overrides.items():  # every key names an existing setting
        section, leaf = key.split('.')
        assert leaf in c[section]
        c[section][leaf] = value
    models.create(c)


def test_heads_sharded_over_a_model_axis_give_the_one_device_loss_and_gradients():
  # Batches of 8 x 512 (tests/experiments/test_train.py's helper): two 256-sample windows each.
  assert jax.device_count() == 8
  loss8, grads8, shardings = loss_and_grads(tiny(mesh={'data': 2, 'model': 4}), jax.devices())
  spec = {k: tuple(s.spec) for k, s in shardings['params'].items()}
  assert spec['l0_qkv_kernel'] == (None, None, 'model', None)  # [E, 3, H, D]: heads split
  assert spec['l0_out_kernel'][0] == 'model' and spec['l0_mlp_in_kernel'] == (None, 'model')
  loss1, grads1, _ = loss_and_grads(tiny(mesh={'data': 1, 'model': 1}), jax.devices()[:1])
  assert abs(loss8 - loss1) < 1e-5
  for g8, g1 in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1)):
    np.testing.assert_allclose(g8, g1, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):  # slow: only the tests marked slow use it
  """(workdir, last metrics) of 60 steps on the embedded corpus through train_and_evaluate."""
  workdir = str(tmp_path_factory.mktemp('st_run'))
  c = tiny(total_steps=60, log_every_steps=20, **{
      'optim.learning_rate': 2e-2, 'optim.warmup_steps': 10, 'checkpoint.every_steps': 60})
  return workdir, train.train_and_evaluate(c, workdir)


@pytest.mark.slow
def test_loss_falls_on_the_embedded_corpus(trained):
  # Steps 41-60: 8 bits is a uniform guess and the corpus's code marginal holds 7.5 bits.
  _, last = trained
  assert last['bits_per_sample'] < 6.0, last


@pytest.mark.slow
def test_trained_run_samples_and_evaluates(trained, tmp_path):
  workdir, _ = trained
  state, config = checkpoint.load(workdir)
  assert int(state['step']) == 60 and config.model_name == 'sparse_transformer'
  # 0.03 s at 16 kHz = 480 samples: the sampler's window (256) slides twice.
  paths = sample.sample(workdir, num_samples=2, seconds=0.03, out_dir=str(tmp_path),
                        chunk_seconds=0.01)
  waves = [sf.read(p, dtype='int16')[0] for p in paths]
  assert [len(w) for w in waves] == [480, 480] and not np.array_equal(*waves)
  # 2,048-sample crops: 8 windows of the 256-sample context each.
  record = evaluate.evaluate_checkpoint(workdir, split='validation', crop_samples=2048)
  assert record['step'] == 60 and record['samples'] == 20 * 2047  # 20 validation segments
  assert record['bits_per_sample'] < 6.0 < record['marginal_entropy_bits'], record
