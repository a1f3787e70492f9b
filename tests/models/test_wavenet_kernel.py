"""The WaveNet CPU kernels (models/wavenet/kernel.py): built by the install; the sampler's step
(step_kernel.cc) leaves the same state as the pure-JAX step; the layer stack's training kernel
(stack_kernel.cc) gives the pure-JAX layers' outputs and gradients, and the model takes it only
where it runs; the fallback when the library is missing or stale. The step-vs-layer and sampler
contracts run on both paths in test_wavenet.py, and the causality tests there differentiate
through the stack kernel."""

import ctypes
import logging
import shutil
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import sharding
from models import wavenet
from models.layers import sampling
from models.wavenet import kernel as step_kernel
from models.wavenet import kernel_build
from models.wavenet import sampler

HAS_COMPILER = bool(shutil.which('c++') or shutil.which('g++'))


@pytest.fixture
def fresh_kernel_state(monkeypatch):
  """`available` forgets its answer before and after the test (monkeypatch undoes the rest)."""
  step_kernel.available.cache_clear()
  yield monkeypatch
  step_kernel.available.cache_clear()


@pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler: the install builds no kernel')
def test_the_install_built_the_kernel():
  assert step_kernel.available(), 'pip install -e . should have built ' + kernel_build.LIBRARY
  assert step_kernel.usable(jnp.float32)
  assert not step_kernel.usable(jnp.bfloat16)  # float32 only: bfloat16 models step in JAX


@pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler')
def test_kernel_leaves_the_same_queues_as_the_jax_step():
  # kernel_size 3 (two past taps per layer), global conditioning; 40 steps wrap every ring.
  m = wavenet.Model(num_classes=32, residual_channels=16, gate_channels=32, skip_channels=16,
                    num_layers=5, dilation_cycle=3, kernel_size=3, num_global=2)
  codes = jax.random.randint(jax.random.key(1), (3, 40), 0, m.num_classes)
  gids = jnp.array([0, 1, 1])
  v = m.init(jax.random.key(0), codes[:, :8], None, gids)
  p = wavenet.unboxed_params(m, v)
  cond = wavenet.layer_conditioning(m, p, p['global_embed'][gids], 'global')

  def run(kernel):
    body = lambda cache, x: wavenet.step(m, p, cache, x, cond, kernel=kernel)[::-1]
    return jax.jit(lambda c: jax.lax.scan(body, wavenet.init_cache(m, 3), c.T))(codes)

  (cache_k, out_k), (cache_j, out_j) = run(True), run(False)
  np.testing.assert_allclose(out_k, out_j, rtol=1e-5, atol=1e-5)
  assert int(cache_k['t']) == int(cache_j['t']) == 40
  for a, b in zip(cache_k['bufs'], cache_j['bufs'], strict=True):
    assert a.shape == b.shape and np.abs(np.asarray(b)).max() > 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_missing_kernel_falls_back_to_jax_with_one_notice(fresh_kernel_state, tmp_path,
                                                            caplog):
  caplog.set_level(logging.WARNING)
  fresh_kernel_state.setattr(kernel_build, 'LIBRARY', str(tmp_path / 'absent.so'))
  m = wavenet.Model(num_classes=16, residual_channels=8, gate_channels=16, skip_channels=8,
                    num_layers=3, dilation_cycle=3)
  v = m.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  codes = np.concatenate(list(wavenet.sample_codes(m, v, jax.random.key(1), 20, batch=2)), 1)
  assert not step_kernel.usable(jnp.float32)
  # Training falls back too: the model's layers are pure JAX.
  assert step_kernel.STACK_FORWARD not in str(jax.make_jaxpr(m.apply)(v, codes))
  notices = [r.getMessage() for r in caplog.records if 'CPU kernels' in r.getMessage()]
  assert len(notices) == 1 and 'absent.so' in notices[0] and 'pure-JAX' in notices[0]
  with pytest.raises(RuntimeError, match='not built'):
    step_kernel.step(*[None] * 14)
  # The fallback draws what the pure-JAX path draws.
  step_kernel.available.cache_clear()
  fresh_kernel_state.undo()
  want = wavenet.sample_codes(m, v, jax.random.key(1), 20, batch=2, kernel=False)
  np.testing.assert_array_equal(codes, np.concatenate(list(want), 1))


@pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler')
def test_a_stale_kernel_is_refused(fresh_kernel_state, tmp_path, caplog):
  caplog.set_level(logging.WARNING)
  src, lib = tmp_path / 'stale.cc', tmp_path / 'stale.so'
  src.write_text('extern "C" int WavegenWavenetStepAbi() { return 0; }\n')
  subprocess.run([kernel_build.compiler(), '-shared', '-fPIC', str(src), '-o', str(lib)],
                 check=True)
  fresh_kernel_state.setattr(kernel_build, 'LIBRARY', str(lib))
  assert not step_kernel.available()
  want = f'interface 0, expected {step_kernel.ABI}'
  assert any('stale' in r.getMessage() and want in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler')
def test_build_writes_a_loadable_library_and_fails_in_one_line(tmp_path, monkeypatch):
  out = kernel_build.build(str(tmp_path / 'k.so'))
  assert ctypes.cdll.LoadLibrary(out).WavegenWavenetStepAbi() == step_kernel.ABI
  assert not (tmp_path / 'k.so.partial').exists()
  with pytest.raises(RuntimeError, match='nonexistent-c[+][+]'):
    kernel_build.build(str(tmp_path / 'x.so'), cxx='/nonexistent-c++')
  bad = tmp_path / 'bad.cc'
  bad.write_text('this is not C++\n')
  monkeypatch.setattr(kernel_build, 'SOURCES', (str(bad),))
  with pytest.raises(RuntimeError, match=r'failed on .*bad\.cc: .*error') as e:
    kernel_build.build(str(tmp_path / 'y.so'))
  assert '\n' not in str(e.value) and not (tmp_path / 'y.so').exists()


@pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler')
@pytest.mark.parametrize('temperature', [1., 0.5, 0.])
def test_kernel_draws_as_the_inverse_cdf_draws(temperature):
  # A softmax model's kernel step also draws the next codes; they are the reference draws
  # (layers/sampling.inverse_cdf) of its own output, for uniforms spread over [0, 1).
  m = wavenet.Model(num_classes=32, residual_channels=16, gate_channels=32, skip_channels=16,
                    num_layers=4, dilation_cycle=2)
  v = m.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  w = wavenet.sampler_weights(m, wavenet.unboxed_params(m, v), kernel=True)
  b = 256
  codes = jax.random.randint(jax.random.key(1), (b,), 0, m.num_classes)
  u = (jnp.arange(b) + 0.5) / b
  out, _, drawn = sampler._step(m, w, wavenet.init_cache(m, b), codes, None, kernel=True,
                                draw=(u, jnp.float32(temperature)))
  want = sampling.inverse_cdf(out, u, temperature)
  np.testing.assert_array_equal(drawn, want)
  assert len(np.unique(np.asarray(drawn))) > (1 if temperature else 0)


@pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler')
def test_a_bfloat16_model_steps_in_jax_and_the_kernel_refuses_it_in_one_line():
  m = wavenet.Model(num_classes=16, residual_channels=8, gate_channels=16, skip_channels=8,
                    num_layers=2, dilation_cycle=2, dtype='bfloat16', num_global=2,
                    local_features=3, hop_length=4)
  v = m.init(jax.random.key(0), jnp.zeros((2, 8), jnp.int32), jnp.zeros((2, 2, 3)),
             jnp.array([0, 1]))
  kw = dict(batch=2, local=np.ones((2, 4, 3), np.float32), global_ids=np.array([0, 1]))
  with pytest.raises(ValueError, match='float32 models, not bfloat16: sample with kernel=False'):
    next(wavenet.sample_codes(m, v, jax.random.key(1), 6, kernel=True, **kw))
  # By default it samples on the pure-JAX step, its queues in bfloat16 throughout.
  codes = next(wavenet.sample_codes(m, v, jax.random.key(1), 6, **kw))
  assert codes.shape == (2, 6) and codes.min() >= 0 and codes.max() < 16


# The stack kernel over every output and conditioning type and kernel sizes 1 to 3; dilations
# 1, 2, 4, 8, 1, 2 reach past the start of the 70-sample rows.
STACK = {
    'softmax': dict(),
    'mixture+global+local': dict(output='mixture', num_global=3, local_features=5,
                                 hop_length=7),
    'gaussian+local, kernel 3': dict(output='gaussian', kernel_size=3, local_features=5,
                                     hop_length=7),
    'softmax+global, kernel 1': dict(kernel_size=1, num_global=3),
}


def _stack_setup(batch=3, length=70, **kw):
  m = wavenet.Model(num_classes=32, residual_channels=16, gate_channels=24, skip_channels=12,
                    num_layers=6, dilation_cycle=4, num_mixtures=4, **kw)
  codes = jax.random.randint(jax.random.key(1), (batch, length), 0, m.num_classes)
  local = (jax.random.normal(jax.random.key(2), (batch, -(-length // 7), 5))
           if m.local_features else None)
  gids = jnp.arange(batch) % m.num_global if m.num_global else None
  v = nn.unbox(m.init(jax.random.key(0), codes[:, :8],
                      None if local is None else local[:, :2], gids))
  return m, v, (codes, local, gids)


def _loss_and_grads(m, v, inputs, path):
  model = m.clone(kernel=path)
  loss = lambda v: jnp.mean(wavenet.nll(model, model.apply(v, *inputs), inputs[0]))
  return jax.jit(jax.value_and_grad(loss))(v)


@pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler')
@pytest.mark.parametrize('config', STACK.values(), ids=STACK.keys())
def test_stack_kernel_gives_the_jax_layers_outputs_and_gradients(config):
  m, v, inputs = _stack_setup(**config)
  out_k = jax.jit(m.clone(kernel=True).apply)(v, *inputs)
  out_j = jax.jit(m.clone(kernel=False).apply)(v, *inputs)
  np.testing.assert_allclose(out_k, out_j, rtol=1e-5, atol=1e-5)
  (loss_k, grads_k), (loss_j, grads_j) = (_loss_and_grads(m, v, inputs, path)
                                          for path in (True, False))
  np.testing.assert_allclose(loss_k, loss_j, rtol=1e-6)
  flat_k, flat_j = (jax.tree_util.tree_leaves_with_path(g) for g in (grads_k, grads_j))
  assert len(flat_k) == len(flat_j) > 0
  for (path, a), (_, b) in zip(flat_k, flat_j, strict=True):
    scale = np.abs(b).max()
    assert scale > 0, jax.tree_util.keystr(path)  # every parameter reaches the loss
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * scale,
                               err_msg=jax.tree_util.keystr(path))


@pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler')
def test_stack_kernel_splits_rows_over_threads_to_the_same_result(monkeypatch):
  # One thread, and three, whose shares of the 2 x 700 rows begin inside a sequence.
  m, v, inputs = _stack_setup(batch=2, length=700, **STACK['mixture+global+local'])
  results = {}
  for n in (1, 3):
    monkeypatch.setattr(step_kernel, 'threads', lambda n=n: n)
    results[n] = (jax.jit(m.clone(kernel=True).apply)(v, *inputs),
                  _loss_and_grads(m, v, inputs, True)[1])
  np.testing.assert_array_equal(results[1][0], results[3][0])  # the forward row by row
  for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[3][1]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # per-thread sums, then added


def _takes_stack_kernel(m, v, inputs) -> bool:
  return step_kernel.STACK_FORWARD in str(jax.make_jaxpr(m.apply)(v, *inputs))


@pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler')
def test_the_model_takes_the_stack_kernel_only_where_it_runs():
  m, v, inputs = _stack_setup(**STACK['softmax'])
  assert _takes_stack_kernel(m, v, inputs)  # float32 on the CPU: by default
  assert not _takes_stack_kernel(m.clone(kernel=False), v, inputs)
  bf16 = m.clone(dtype='bfloat16')
  assert not _takes_stack_kernel(bf16, v, inputs)
  assert bf16.apply(v, *inputs).shape == (3, 70, 32)
  with jax.set_mesh(sharding.make_mesh({'data': 1, 'model': 1}, jax.devices()[:1])):
    assert _takes_stack_kernel(m, v, inputs)  # one device: nothing to partition
  with jax.set_mesh(sharding.make_mesh({'data': -1, 'model': 1})):  # the 8 test devices
    assert not _takes_stack_kernel(m, v, inputs)


@pytest.mark.skipif(not HAS_COMPILER, reason='no C++ compiler')
@pytest.mark.parametrize('batch', [1, 2, 3])
def test_step_kernel_draws_the_same_with_its_helper_thread(monkeypatch, batch):
  # With 2 or more cores a step of 1 or 2 streams runs its second half of layers and the head
  # on a helper thread; 3 streams, or one core, run all on the caller's. Same codes either way.
  m = wavenet.Model(num_classes=32, residual_channels=16, gate_channels=32, skip_channels=16,
                    num_layers=5, dilation_cycle=3, num_global=2)
  v = m.init(jax.random.key(0), jnp.zeros((batch, 4), jnp.int32), None, jnp.zeros(batch, int))
  codes = {}
  for n in (1, 2):
    monkeypatch.setattr(step_kernel, 'threads', lambda n=n: n)
    jax.clear_caches()  # the sampler's jitted loop holds the count it was traced with
    codes[n] = np.concatenate(list(wavenet.sample_codes(
        m, v, jax.random.key(1), 60, batch=batch, global_ids=np.arange(batch) % 2,
        kernel=True)), 1)
  np.testing.assert_array_equal(codes[1], codes[2])
  assert len(np.unique(codes[1])) > 3
