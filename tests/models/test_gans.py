"""The adversarial families and their shared pieces: generator lengths, the convolutions, the
objectives, feature matching, the gradient penalty against finite differences, phase shuffle,
random windows, the generators' reach and window-by-window vocoding, SpecGAN's moments, and
the one-line errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import common
from models import hifigan
from models import melgan
from models import specgan
from models import wavegan
from models.layers import conv
from models.layers import discriminators
from models.layers import gan
import models
from tests.conftest import config_path

HOP, MELS = 64, 5
_TINY_FIELDS = {
    'melgan': dict(hop_length=HOP, local_features=MELS, upsample_strides=(4, 4, 4), channels=16,
                   residual_layers=2, discriminator_width=1 / 16),
    'hifigan': dict(hop_length=HOP, local_features=MELS, upsample_strides=(4, 4, 4),
                    upsample_kernels=(8, 8, 8), channels=16, resblock_kernels=(3, 5),
                    resblock_dilations=(1, 3, 1, 3), discriminators='mpd+msd',
                    discriminator_width=1 / 16),
}
FAMILY = {'melgan': melgan, 'hifigan': hifigan}
TINY = {name: lambda name=name, **kw: FAMILY[name].Model(**{**_TINY_FIELDS[name], **kw})
        for name in FAMILY}  # hop 64, 5 mels: small enough to build and run in a second


def _vocoder(name, frames=12, batch=2, **kw):
  model = TINY[name](**kw)
  mel = jax.random.normal(jax.random.key(1), (batch, frames, MELS)) - 2.
  audio = 0.3 * jax.random.normal(jax.random.key(0), (batch, frames * HOP))
  variables = jax.jit(lambda b: FAMILY[name].init(model, jax.random.key(2), b))(
      {'audio': audio, 'mel': mel})
  return model, variables, audio, mel


@pytest.mark.parametrize('spec', ['melgan.py', 'melgan.py:data=22k', 'hifigan.py',
                                  'hifigan.py:version=v3', 'hifigan.py:data=22k,version=v3',
                                  'melgan.py:runlocal', 'hifigan.py:runlocal'])
def test_the_generators_render_frames_times_hop(spec):
  c = common.load(config_path(spec.split(':')[0][:-3]) + spec[len(spec.split(':')[0]):])
  model = models.create(c)
  frames = 7
  mel = jnp.zeros((1, frames, model.local_features))
  out = jax.eval_shape(
      lambda m: model.init_with_output(jax.random.key(0), None, m, method='synthesize')[0], mel)
  assert out.shape == (1, frames * model.hop_length)


@pytest.mark.parametrize('name', sorted(TINY))
def test_the_reach_bounds_what_a_sample_depends_on(name):
  """The gradient of one output sample w.r.t. mel frames beyond context_frames is exactly 0,
  and the generator does read frames near it."""
  model, v, _, mel = _vocoder(name, frames=24, batch=1)
  t = 12 * HOP + 5
  grad = jax.grad(lambda m: model.apply(v, None, m, method='synthesize')[0, t])(mel)
  reach = np.nonzero(np.any(np.asarray(grad[0]) != 0, axis=1))[0]
  assert reach.size and abs(reach - 12).max() <= model.context_frames, reach
  assert 11 in reach and 13 in reach


@pytest.mark.parametrize('name', sorted(TINY))
def test_window_by_window_vocoding_equals_one_pass(name):
  model, v, _, mel = _vocoder(name, frames=40)
  family = FAMILY[name]
  whole = np.asarray(jnp.clip(model.apply(v, None, mel, method='synthesize'), -1, 1))
  n = 40 * HOP - 17
  chunks = list(family.generate(model, v, jax.random.key(0), n, batch=2, cond={'mel': mel},
                                chunk_samples=3 * HOP + 1))
  assert all(c.shape[1] == 3 * HOP + 1 for c in chunks[:-1])
  np.testing.assert_allclose(np.concatenate(chunks, axis=1), whole[:, :n], atol=2e-5)
  with pytest.raises(ValueError, match='does not continue a prompt'):
    next(family.generate(model, v, jax.random.key(0), 10, batch=2, cond={'mel': mel},
                         prompt=np.zeros((2, 4))))
  with pytest.raises(ValueError, match=r'num_samples=2561: the mel of 40 frames covers 2560'):
    next(family.generate(model, v, jax.random.key(0), 2561, batch=2, cond={'mel': mel}))


def test_conv_transpose_is_a_transposed_convolution():
  """Against the definition y[n] = sum_t x[t] w[n - t s + pad], cropped to T s, in 1-D and
  2-D; and weight norm starts at the plain kernel."""
  x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
  for k, s in ((8, 4), (25, 4), (5, 2), (4, 4)):
    layer = conv.ConvTranspose(2, k, s)
    v = layer.init(jax.random.key(0), x)
    w = np.asarray(v['params']['kernel'])  # [k, 3, 2]
    full = np.zeros((2, (5 - 1) * s + k, 2), np.float32)
    for t in range(5):
      full[:, t * s:t * s + k] += np.einsum('bc,kcf->bkf', x[:, t], w)
    start = (k - s + 1) // 2
    np.testing.assert_allclose(layer.apply(v, x), full[:, start:start + 5 * s], atol=1e-5)
  x2 = np.random.default_rng(1).normal(size=(1, 3, 4, 2)).astype(np.float32)
  out = conv.ConvTranspose(3, (5, 5), (2, 2)).init_with_output(jax.random.key(0), x2)[0]
  assert out.shape == (1, 6, 8, 3)
  plain = conv.Conv(4, (3,), dilation=(2,))
  normed = conv.Conv(4, (3,), dilation=(2,), weight_norm=True)
  xs = jnp.asarray(x)
  np.testing.assert_allclose(normed.init_with_output(jax.random.key(0), xs)[0],
                             plain.init_with_output(jax.random.key(0), xs)[0], atol=1e-5)
  strided = conv.Conv(4, (41,), (4,)).init_with_output(jax.random.key(0), jnp.ones((1, 33, 2)))
  assert strided[0].shape == (1, 9, 4)  # ceil(33 / 4)


def test_objectives_and_feature_matching():
  r, f = [jnp.array([2., 0.5]), jnp.array([[-1.]])], [jnp.array([-2., 0.]), jnp.array([[3.]])]
  np.testing.assert_allclose(gan.discriminator_objective('hinge', r, f),
                             (0 + 0.25) + (0 + 0.5) + (2 + 4), rtol=1e-6)
  np.testing.assert_allclose(gan.discriminator_objective('least_squares', r, f),
                             (1 + .25) / 2 + (4 + 0) / 2 + 4 + 9, rtol=1e-6)
  np.testing.assert_allclose(gan.discriminator_objective('wasserstein', r, f),
                             (-1 - 1.25) + (3 + 1), rtol=1e-6)
  np.testing.assert_allclose(gan.generator_objective('hinge', f), 1 - 3, rtol=1e-6)
  np.testing.assert_allclose(gan.generator_objective('least_squares', f), (9 + 1) / 2 + 4,
                             rtol=1e-6)
  fm = gan.feature_matching([[jnp.ones(4), jnp.zeros(2)]], [[jnp.zeros(4), jnp.full(2, 3.)]])
  np.testing.assert_allclose(fm, 1 + 3)
  g = jax.grad(lambda a: gan.feature_matching([[a]], [[jnp.zeros(3)]]))(jnp.ones(3))
  assert not np.any(g)  # the real features are constants
  with pytest.raises(ValueError, match=r"model.objective='nope': expected one of hinge"):
    gan.generator_objective('nope', f)


def test_the_gradient_penalty_matches_finite_differences():
  critic_net = nn.Sequential([nn.Dense(7), jnp.tanh, nn.Dense(1)])
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6)), jnp.float64
                  if jax.config.jax_enable_x64 else jnp.float32)
  p = critic_net.init(jax.random.key(0), x)
  critic = lambda v: critic_net.apply(p, v)[:, 0]
  real, fake = x, x[::-1] * 0.5
  key = jax.random.key(5)
  gp = float(gan.gradient_penalty(critic, real, fake, key))
  e = np.asarray(jax.random.uniform(key, (3, 1)))
  x_hat = e * np.asarray(real) + (1 - e) * np.asarray(fake)
  h, norms = 1e-2, []
  for row in x_hat:
    grad = [(float(critic(jnp.asarray(row + h * d)[None])[0]) -
             float(critic(jnp.asarray(row - h * d)[None])[0])) / (2 * h) for d in np.eye(6)]
    norms.append(np.linalg.norm(grad))
  np.testing.assert_allclose(gp, np.mean((np.array(norms) - 1) ** 2), rtol=2e-3)
  assert gp > 0


def test_phase_shuffle_shifts_each_row_with_reflection():
  n, t = 2, 10
  x = jnp.arange(16 * t * 2, dtype=jnp.float32).reshape(16, t, 2)
  out = np.asarray(gan.phase_shuffle(x, jax.random.key(0), n))
  padded = np.pad(np.asarray(x), ((0, 0), (n, n), (0, 0)), mode='reflect')
  shifts = []
  for b in range(16):
    ks = [k for k in range(-n, n + 1) if np.array_equal(out[b], padded[b, n - k:n - k + t])]
    assert len(ks) == 1, b
    shifts.append(ks[0])
  assert len(set(shifts)) >= 3  # the rows draw their own shifts
  assert set(shifts) <= set(range(-n, n + 1))
  np.testing.assert_array_equal(gan.phase_shuffle(x, jax.random.key(0), n), out)  # the seed
  np.testing.assert_array_equal(gan.phase_shuffle(x, jax.random.key(0), 0), x)


def test_random_windows_stay_inside_and_follow_the_seed():
  starts = np.asarray(gan.window_starts(jax.random.key(0), 4000, 2048, 640))
  assert starts.min() >= 0 and starts.max() <= 2048 - 640
  assert starts.min() < 50 and starts.max() > 2048 - 640 - 50  # the whole range is used
  aligned = np.asarray(gan.window_starts(jax.random.key(0), 500, 2048, 1024, align=512))
  assert set(aligned) == {0, 512, 1024}
  np.testing.assert_array_equal(gan.window_starts(jax.random.key(0), 4000, 2048, 640), starts)
  assert not np.array_equal(gan.window_starts(jax.random.key(1), 4000, 2048, 640), starts)
  with pytest.raises(ValueError, match='a random window of 4096 samples does not fit in 2048'):
    gan.window_starts(jax.random.key(0), 1, 2048, 4096)
  # The ensemble: its discriminators read their own windows, the same for the same key.
  rwd = discriminators.RandomWindows(hop=64, windows=(32, 64, 128), width=1 / 16)
  x, mel = jnp.ones((2, 512)) * jnp.arange(512) / 512, jnp.zeros((2, 8, MELS))
  v = rwd.init(jax.random.key(0), x, mel, jax.random.key(1))
  out = lambda k: [o[0] for o in rwd.apply(v, x, mel, jax.random.key(k))]
  assert len(out(1)) == 6
  np.testing.assert_array_equal(np.concatenate(out(1)), np.concatenate(out(1)))
  assert not np.array_equal(np.concatenate(out(1)), np.concatenate(out(2)))


def test_specgan_moments_are_the_running_moments_of_the_data():
  model = specgan.Model(dim=2)
  rng = np.random.default_rng(0)
  batches = [{'audio': (0.1 * (i + 1) * rng.normal(size=(2, 16384))).astype(np.float32)}
             for i in range(3)]
  v = specgan.init(model, jax.random.key(0), batches[0])
  assert float(v['moments']['count']) == 0  # init takes no statistics
  for b in batches:
    _, _, state = specgan.discriminator_loss(model, v, b, jnp.zeros((2, 128, 128)),
                                             jax.random.key(1))
    v = {**v, **state}
  s = np.concatenate([np.asarray(specgan.log_magnitude(jnp.asarray(b['audio'])))
                      for b in batches]).reshape(-1, 128)
  np.testing.assert_allclose(v['moments']['mean'], s.mean(0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(v['moments']['var'], s.var(0), rtol=2e-3, atol=1e-3)
  assert float(v['moments']['count']) == s.shape[0]
  x = model.apply(v, batches[0], method='real')
  assert x.shape == (2, 128, 128) and float(jnp.abs(x).max()) <= 1.


@pytest.mark.parametrize('family', [wavegan, specgan])
def test_clip_models_draw_clips_per_stream(family):
  model = family.Model(dim=2)
  v = family.init(model, jax.random.key(0), {'audio': np.zeros((1, 16384), np.float32)})
  two = np.concatenate(list(family.generate(model, v, jax.random.key(3), 20000, batch=2,
                                            chunk_samples=7000)), axis=1)
  assert two.shape == (2, 20000) and np.all(np.abs(two) <= 1)
  one = np.concatenate(list(family.generate(model, v, jax.random.key(3), 20000,
                                            first_stream=1)), axis=1)
  np.testing.assert_array_equal(one, two[1:])
  with pytest.raises(ValueError, match='draws clips from noise: it does not continue'):
    next(family.generate(model, v, jax.random.key(3), 10, prompt=np.zeros((1, 5))))
  with pytest.raises(ValueError, match=r'needs float clips of 16384 samples'):
    family.loss(model, v, {'audio': np.zeros((1, 8192), np.float32)}, jax.random.key(0))


def test_bad_settings_are_one_line_errors():
  with pytest.raises(ValueError, match=r"model.discriminators='cnn': expected one of msd"):
    TINY['melgan'](discriminators='cnn')
  with pytest.raises(ValueError, match=r'model.upsample_strides=\(4, 4\): their product must '
                     r'be the hop, 64'):
    TINY['melgan'](upsample_strides=(4, 4))
  with pytest.raises(ValueError, match=r'model.resblock_dilations=\(1, 3, 1\): not split'):
    TINY['hifigan'](resblock_dilations=(1, 3, 1))
  with pytest.raises(ValueError, match=r"model.objective='wgan': expected one of"):
    wavegan.Model(objective='wgan')
  with pytest.raises(ValueError, match='model.clip_samples=1000: expected a multiple of'):
    wavegan.Model(clip_samples=1000)
  model, v, audio, mel = _vocoder('melgan', frames=4)
  with pytest.raises(ValueError, match=r'250 samples: a GAN vocoder renders whole frames; set '
                     r'input.crop_samples to a multiple of the hop 64'):
    melgan.loss(model, v, {'audio': audio[:, :250], 'mel': mel}, jax.random.key(0))
  with pytest.raises(ValueError, match=r"the batch has no \['mel'\]"):
    melgan.loss(model, v, {'audio': audio}, jax.random.key(0))
