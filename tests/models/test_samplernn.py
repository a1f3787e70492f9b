"""SampleRNN: the sampler against the parallel pass, causality, truncated BPTT, the sharded
loss, a falling loss, sampling, and exact resume."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import samplernn
from models.samplernn import sampler
from tests.conftest import assert_sharded_loss_equals_one_device
from tests.conftest import kill_and_resume
from tests.conftest import metric_over_steps
from tests.conftest import tiny_samplernn
from tests.conftest import train_step_of

MODELS = {'3-tier gru': dict(frame_sizes=(8, 2), rnn='gru'),
          '3-tier lstm 2 layers': dict(frame_sizes=(8, 2), rnn='lstm', rnn_layers=2),
          '2-tier gru': dict(frame_sizes=(16,), rnn='gru'),
          '4-tier gru': dict(frame_sizes=(16, 4, 2), rnn='gru')}


def _model(name, **kwargs):
  return samplernn.Model(**{'num_classes': 256, 'encoding': 'linear', 'dim': 24,
                            'embed_dim': 8, 'tbptt_samples': 64, **MODELS[name], **kwargs})


def _codes(model, n, rows=2, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (rows, model.context + n)),
                     jnp.int32)


def _variables(model, seed=0):
  """Initialised variables with the learned initial states moved off zero (they are learned)."""
  v = nn.unbox(samplernn.init(model, jax.random.key(seed),
                              {'audio': jnp.zeros((1, 1), jnp.int32)}))
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.3 if 'h0' in jax.tree_util.keystr(path) else x, v)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_the_sampler_steps_as_the_parallel_pass(name):
  """336 teacher-forced steps of `step` (each tier at its own rate) against `__call__`."""
  model = _model(name)
  codes = _codes(model, 336)
  variables = _variables(model)
  parallel = model.apply(variables, codes)  # [B, 336, Q]
  p = samplernn.unboxed_params(model, variables)
  step = jax.jit(lambda cache, x: sampler.step(model, p, cache, x))
  cache, out = sampler.init_cache(model, 2, p), []
  for t in range(codes.shape[1] - 1):
    logits, cache = step(cache, codes[:, t])
    if t >= model.context - 1:
      out.append(logits)
  np.testing.assert_allclose(jnp.stack(out, 1), parallel, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize('name', ['3-tier gru', '2-tier gru'])
def test_output_t_has_zero_gradient_from_inputs_at_t_and_later(name):
  model = _model(name)
  variables = _variables(model)
  onehot = jax.nn.one_hot(_codes(model, 64, rows=1), 256)  # [1, C + 64, Q]
  p = samplernn.unboxed_params(model, variables)
  c = model.context

  def logit(x, t):
    states = samplernn.initial_state(model, p, 1)
    return samplernn.subsequence(model, p, states, x)[0][0, t].sum()
  for t in (0, 5, 17, 40):  # output t predicts position C + t
    g = np.abs(np.asarray(jax.grad(logit)(onehot, t))).sum(-1)[0]  # [C + 64]
    assert np.all(g[c + t:] == 0), (t, np.nonzero(g[c + t:]))
    assert g[c + t - 1] > 0 and g[0] > 0  # the last input and the first context both count


def test_truncated_bptt_keeps_the_loss_and_stops_the_gradient_between_subsequences():
  model = _model('3-tier gru')
  whole = _model('3-tier gru', tbptt_samples=256)
  codes = _codes(model, 256)
  variables = _variables(model)
  batch = {'audio': codes}
  (l_tbptt, m), g_tbptt = jax.value_and_grad(
      lambda v: samplernn.loss(model, v, batch)[:2], has_aux=True)(variables)
  l_whole, g_whole = jax.value_and_grad(lambda v: samplernn.loss(whole, v, batch)[0])(variables)
  np.testing.assert_allclose(l_tbptt, l_whole, rtol=1e-6)  # the same forward computation
  assert int(m['weight']) == 2 * 256
  h0 = lambda g: np.asarray(g['params']['t0_rnn0_h0'])
  assert not np.allclose(h0(g_tbptt), h0(g_whole))  # the first subsequence alone reaches h0
  # A crop that is not a whole number of subsequences: the padding is not scored.
  short = {'audio': codes[:, :model.context + 100]}
  loss, metrics, _ = samplernn.loss(model, variables, short)
  assert int(metrics['weight']) == 2 * 100
  ref = model.apply(variables, codes[:, :model.context + 104])[:, :100]
  nll = -jnp.take_along_axis(jax.nn.log_softmax(ref), codes[:, model.context:model.context + 100,
                                                             None], -1)
  np.testing.assert_allclose(loss, nll.mean(), rtol=1e-5)


def test_sharded_loss_and_gradients_equal_one_device():
  assert_sharded_loss_equals_one_device(lambda mesh: tiny_samplernn(mesh=mesh))


def test_loss_falls_on_the_embedded_corpus():
  c = tiny_samplernn(**{'optim.learning_rate': 3e-3})
  bits = metric_over_steps(c, *train_step_of(c), 'bits_per_sample', 30)
  assert np.mean(bits[-5:]) < np.mean(bits[:5]) - 0.5, bits


def test_sampling_does_not_depend_on_chunking_and_continues_a_prompt():
  model = _model('3-tier gru')
  variables = _variables(model)
  rng = jax.random.key(3)
  draw = lambda **kw: np.concatenate(list(samplernn.sample_codes(
      model, variables, rng, 90, **kw)), axis=1)
  whole = draw(batch=2, chunk_samples=90)
  np.testing.assert_array_equal(draw(batch=2, chunk_samples=7), whole)
  prompt = np.asarray(_codes(model, 20, rows=2))  # 28 codes: context and 20 teacher-forced
  cont = draw(prompt=prompt, chunk_samples=16)
  assert cont.shape == (2, 90) and not np.array_equal(cont, whole)
  # The continuation's first code is what the parallel pass's last logit favours at T = 0.
  logits = model.apply(variables, jnp.concatenate(
      [jnp.asarray(prompt), jnp.zeros((2, 4), jnp.int32)], axis=1))[:, 20]
  greedy = np.concatenate(list(samplernn.sample_codes(model, variables, rng, 1, prompt=prompt,
                                                      temperature=0.)), axis=1)
  np.testing.assert_array_equal(greedy[:, 0], np.argmax(logits, -1))


@pytest.mark.slow
def test_killed_run_resumes_bit_identically(tmp_path):
  flags_ = ['--config.total_steps=8', '--config.checkpoint.every_steps=2',
            '--config.model.dim=32', '--config.model.embed_dim=8',
            '--config.model.tbptt_samples=128', '--config.input.crop_samples=264',
            '--config.evals.validation.every_steps=0', '--config.evals.sample.every_steps=0',
            '--config.checkpoint.async_save=False']
  straight, killed, _ = kill_and_resume(tmp_path, 'experiments/configs/samplernn.py:runlocal',
                                        flags_, total=8)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(killed)):
    np.testing.assert_array_equal(a, b)
