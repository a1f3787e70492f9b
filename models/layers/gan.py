"""What every adversarial family shares: the objectives, feature matching, the gradient penalty,
phase shuffle, random windows, and the family contract's functions over a generator and a
discriminator.

A GAN family's Model is one linen Module with two submodules, `generator` and `discriminator`,
so that its parameters are the subtrees params['generator'] and params['discriminator']
(models/__init__.py: the GAN trainer, experiments/train_gan.py, gives each its own optimiser).
It defines these methods, each over the discriminator's domain (audio for the waveform models,
normalised log-magnitude spectrograms for SpecGAN):

    conditioning(batch) -> cond or None       what the generator and discriminator read
    noise(rng, rows) -> z or None             the generator's latent (None: deterministic)
    synthesize(z, cond) -> x_fake             the generator
    real(batch) -> x_real                     the data in the domain (may update model state)
    discriminate(x, cond, rng) -> [(logits, [features])]   one entry per discriminator
    reconstruction(x_real, x_fake) -> {name: (weight, value)}   generator terms beside the
                                              adversarial one and feature matching ({} if none)
    render(x, cond) -> audio [B, T]           domain -> float audio (identity for waveforms)

and the fields `objective` (one of OBJECTIVES), `feature_matching` and `gradient_penalty`
(weights; 0 turns a term off).

The trainer's step reads the family through three functions:

    fake(model, variables, batch, rng)                                 -> x_fake
    discriminator_loss(model, variables, batch, x_fake, rng)           -> (loss, metrics, state)
    generator_loss(model, variables, batch, x_fake, rng)               -> (loss, metrics)

The generator's loss is a function of x_fake (its gradient reaches the generator's parameters
through the vjp of `fake`), so one generator pass serves the discriminator's update and the
generator's. In the discriminator's loss the real and the fake batch draw their random windows
and shifts with independent keys (fold_in(rng, 0) and (rng, 1)); in the generator's they share
one, so that feature matching compares the same windows. The contract's `loss` is the
generator's objective and the discriminator's at the current parameters, with both metrics.

Objectives over discriminator logits D (each a mean over its elements, summed over
discriminators):

    hinge           D: relu(1 - D(x)) + relu(1 + D(G))       G: -D(G)
    least_squares   D: (D(x) - 1)^2 + D(G)^2                 G: (D(G) - 1)^2
    wasserstein     D: D(G) - D(x)                           G: -D(G)
"""

from collections.abc import Iterator, Sequence
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.layers import sampling

OBJECTIVES = ('hinge', 'least_squares', 'wasserstein')


def check_objective(name: str) -> None:
  if name not in OBJECTIVES:
    raise ValueError(f'model.objective={name!r}: expected one of {", ".join(OBJECTIVES)}')


def discriminator_objective(kind: str, real: Sequence[jax.Array],
                            fake: Sequence[jax.Array]) -> jax.Array:
  """The discriminators' objective (module docstring) over their real and fake logits."""
  total = 0.
  for r, f in zip(real, fake, strict=True):
    if kind == 'hinge':
      total += jnp.mean(jax.nn.relu(1. - r)) + jnp.mean(jax.nn.relu(1. + f))
    elif kind == 'least_squares':
      total += jnp.mean(jnp.square(r - 1.)) + jnp.mean(jnp.square(f))
    elif kind == 'wasserstein':
      total += jnp.mean(f) - jnp.mean(r)
    else:
      check_objective(kind)
  return total


def generator_objective(kind: str, fake: Sequence[jax.Array]) -> jax.Array:
  """The generator's adversarial objective over the discriminators' logits of its output."""
  check_objective(kind)
  if kind == 'least_squares':
    return sum(jnp.mean(jnp.square(f - 1.)) for f in fake)
  return sum(-jnp.mean(f) for f in fake)


def feature_matching(real: Sequence[Sequence[jax.Array]],
                     fake: Sequence[Sequence[jax.Array]]) -> jax.Array:
  """Sum over discriminators and their layers of the mean |feature(real) - feature(fake)|
  (MelGAN's feature matching; the real features are constants)."""
  total = 0.
  for rs, fs in zip(real, fake, strict=True):
    for r, f in zip(rs, fs, strict=True):
      total += jnp.mean(jnp.abs(jax.lax.stop_gradient(r) - f))
  return total


def gradient_penalty(critic, real: jax.Array, fake: jax.Array, rng: jax.Array) -> jax.Array:
  """WGAN-GP (Gulrajani et al. 2017): mean over rows of (|grad_x critic(x_hat)|_2 - 1)^2 at
  x_hat = e x + (1 - e) x_fake, e ~ U[0, 1) per row; `critic(x) -> [B]` scores rows alone."""
  e = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1))
  x_hat = e * real + (1. - e) * jax.lax.stop_gradient(fake)
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.))


def phase_shuffle(x: jax.Array, rng: jax.Array, n: int) -> jax.Array:
  """WaveGAN's phase shuffle of x [B, T, C]: each row shifted in time by its own k, uniform in
  [-n, n], the vacated samples filled by reflection (out[t] = x[t - k], reflected at the ends)."""
  if n == 0:
    return x
  t = x.shape[1]
  k = jax.random.randint(rng, (x.shape[0],), -n, n + 1)
  padded = jnp.pad(x, ((0, 0), (n, n), (0, 0)), mode='reflect')
  return jax.vmap(lambda row, s: jax.lax.dynamic_slice_in_dim(row, s, t, axis=0))(padded, n - k)


def window_starts(rng: jax.Array, rows: int, length: int, window: int,
                  align: int = 1) -> jax.Array:
  """[rows] random starts of windows of `window` samples inside a sequence of `length`: uniform
  over the multiples of `align` in [0, length - window]."""
  if window > length:
    raise ValueError(f'a random window of {window} samples does not fit in {length}')
  return jax.random.randint(rng, (rows,), 0, (length - window) // align + 1) * align


def cut(x: jax.Array, starts: jax.Array, window: int) -> jax.Array:
  """Rows of x [B, T, ...] cut to [B, window, ...] from their own starts [B]."""
  return jax.vmap(lambda row, s: jax.lax.dynamic_slice_in_dim(row, s, window, axis=0))(x, starts)


# ---------------------------------------------------------------------------------------------
# The family contract over a GAN Model (module docstring)


def _rows(batch: dict) -> int:
  return np.shape(batch['audio'])[0]


def init(model, rng: jax.Array, batch: dict) -> dict:
  """Both networks' variables, shaped by `batch` (the model's `initialize` runs each once)."""
  return model.init(rng, batch, rng, method='initialize')


def fake(model, variables: dict, batch: dict, rng: jax.Array) -> jax.Array:
  """The generator's output for `batch` (its conditioning; a fresh latent from `rng`)."""
  z = model.noise(rng, _rows(batch))
  cond = model.conditioning(batch)
  return model.apply(variables, z, cond, method='synthesize')


def _mutable(variables: dict) -> list[str]:
  return [k for k in variables if k != 'params']


def _real(model, variables: dict, batch: dict):
  mutable = _mutable(variables)
  if mutable:
    x, state = model.apply(variables, batch, method='real', mutable=mutable)
    return x, dict(state)
  return model.apply(variables, batch, method='real'), {}


def _mask_weight(batch: dict) -> jax.Array:
  rows = _rows(batch)
  mask = batch.get('mask', jnp.ones((rows,), bool))
  return jnp.sum(mask) * np.shape(batch['audio'])[1]


def discriminator_loss(model, variables: dict, batch: dict, x_fake: jax.Array,
                       rng: jax.Array) -> tuple:
  """(loss, metrics, model state) of the discriminators on `batch` against `x_fake`.

  metrics: 'd_loss' (= loss), 'd_objective', 'd_real' and 'd_fake' (mean logits),
  'gradient_penalty' (where its weight is not 0), 'weight' (audio samples of the batch)."""
  x_real, state = _real(model, variables, batch)
  v = {**variables, **state}
  cond = model.conditioning(batch)
  x_fake = jax.lax.stop_gradient(x_fake)
  d = lambda x, key: model.apply(v, x, cond, key, method='discriminate')
  real = d(x_real, jax.random.fold_in(rng, 0))
  fake_ = d(x_fake, jax.random.fold_in(rng, 1))
  objective = discriminator_objective(model.objective, [r[0] for r in real],
                                      [f[0] for f in fake_])
  metrics = {'d_objective': objective,
             'd_real': jnp.mean(jnp.stack([jnp.mean(r[0]) for r in real])),
             'd_fake': jnp.mean(jnp.stack([jnp.mean(f[0]) for f in fake_])),
             'weight': _mask_weight(batch)}
  loss = objective
  if model.gradient_penalty:
    key = jax.random.fold_in(rng, 2)
    critic = lambda x: sum(jnp.sum(o[0].reshape(o[0].shape[0], -1), axis=1)
                           for o in d(x, jax.random.fold_in(rng, 3)))
    gp = gradient_penalty(critic, x_real, x_fake, key)
    metrics['gradient_penalty'] = gp
    loss = loss + model.gradient_penalty * gp
  metrics['d_loss'] = loss
  return loss, metrics, state


def generator_loss(model, variables: dict, batch: dict, x_fake: jax.Array,
                   rng: jax.Array) -> tuple:
  """(loss, metrics) of the generator's output `x_fake` for `batch`: the adversarial objective,
  feature matching and the model's reconstruction terms, each weighted.

  metrics: 'g_loss' (= loss), 'g_adversarial', 'feature_matching' (where weighted), each
  reconstruction term by name, 'weight'."""
  cond = model.conditioning(batch)
  d = lambda x: model.apply(variables, x, cond, rng, method='discriminate')
  fake_ = d(x_fake)
  adversarial = generator_objective(model.objective, [f[0] for f in fake_])
  metrics = {'g_adversarial': adversarial, 'weight': _mask_weight(batch)}
  loss = adversarial
  need_real = model.feature_matching or model.has_reconstruction
  x_real = _real(model, variables, batch)[0] if need_real else None
  if model.feature_matching:
    fm = feature_matching([r[1] for r in d(x_real)], [f[1] for f in fake_])
    metrics['feature_matching'] = fm
    loss = loss + model.feature_matching * fm
  if model.has_reconstruction:
    terms = model.apply(variables, x_real, x_fake, method='reconstruction')
    for name, (weight, value) in terms.items():
      metrics[name] = value
      loss = loss + weight * value
  metrics['g_loss'] = loss
  return loss, metrics


def loss(model, variables: dict, batch: dict, rng: jax.Array) -> tuple:
  """The contract's loss: (the generator's loss, both networks' metrics, model state) at the
  current parameters (the trainer steps them with `fake` and the two losses)."""
  x_fake = fake(model, variables, batch, jax.random.fold_in(rng, 0))
  _, d_metrics, state = discriminator_loss(model, variables, batch, x_fake,
                                           jax.random.fold_in(rng, 1))
  g, g_metrics = generator_loss(model, {**variables, **state}, batch, x_fake,
                                jax.random.fold_in(rng, 2))
  return g, {**d_metrics, **g_metrics}, state


class ClipGAN(nn.Module):
  """The fields and methods an unconditional clip GAN (WaveGAN, SpecGAN) shares: clips of
  `clip_samples` float samples from z ~ U(-1, 1)^latent_dim, no conditioning, no
  reconstruction terms. A subclass sets up `generator` and `discriminator` and defines
  `synthesize`, `real` (through `clip`) and `discriminate`, and `render` where its domain is
  not audio."""
  sample_rate: int = 16000  # derived from config.input
  encoding: str = 'float'  # derived
  clip_samples: int = 16384
  latent_dim: int = 100
  objective: str = 'wasserstein'
  gradient_penalty: float = 10.
  feature_matching: float = 0.

  conditions = ()
  has_reconstruction = False

  def __post_init__(self):
    if self.encoding != 'float':
      raise ValueError(f"model.encoding={self.encoding!r} (from config.input.encoding): "
                       f"{type(self).__name__} reads float audio; expected 'float'")
    check_objective(self.objective)
    super().__post_init__()

  def clip(self, batch: dict) -> jax.Array:
    """batch['audio'], checked to be float clips of `clip_samples`."""
    x = jnp.asarray(batch['audio'])
    if not jnp.issubdtype(x.dtype, jnp.floating) or x.shape[1] != self.clip_samples:
      name = type(self).__module__.split('.')[-1]
      raise ValueError(f"batch['audio'] is {x.dtype} {tuple(x.shape)}: {name} needs float "
                       f'clips of {self.clip_samples} samples (config.input.encoding=float, '
                       f'crop_samples={self.clip_samples})')
    return x

  def conditioning(self, batch: dict):
    del batch
    return None

  def noise(self, rng: jax.Array, rows: int) -> jax.Array:
    return jax.random.uniform(rng, (rows, self.latent_dim), minval=-1., maxval=1.)

  def render(self, x: jax.Array, cond) -> jax.Array:
    del cond
    return x

  def reconstruction(self, real, fake) -> dict:
    del real, fake
    return {}

  def initialize(self, batch: dict, rng: jax.Array) -> list:
    z = self.noise(rng, np.shape(batch['audio'])[0])
    self.real(batch)  # creates any state the data sets (SpecGAN's moments)
    return self.discriminate(self.synthesize(z, None), None, rng)


# ---------------------------------------------------------------------------------------------
# Sampling


@functools.partial(jax.jit, static_argnums=0)
def render_streams(model, variables: dict, z, cond=None) -> jax.Array:
  """Audio [B, T] of each stream alone (lax.map over rows, so a stream's audio is bit-identical
  however many are drawn beside it), clipped to [-1, 1]."""
  def one(args):
    zi, ci = args
    add = lambda t: None if t is None else t[None]
    x = model.apply(variables, add(zi), add(ci), method='synthesize')
    return model.apply(variables, x, add(ci), method='render')[0]
  return jnp.clip(jax.lax.map(one, (z, cond)), -1., 1.)


def clips(model, variables: dict, rng: jax.Array, num_samples: int, *, batch: int = 1,
          prompt=None, cond: dict | None = None, temperature: float = 1.0,
          chunk_samples: int = 16000, first_stream: int = 0) -> Iterator[np.ndarray]:
  """The contract's `generate` for unconditional clip models: stream i is clip after clip, the
  latent of its clip c from sampling.stream_key(rng, c, first_stream + i) (scaled by
  `temperature`), each `model.clip_samples` long, cut to `num_samples`."""
  del cond
  name = type(model).__module__.split('.')[-1]
  if prompt is not None:
    raise ValueError(f'{name} draws clips from noise: it does not continue a prompt')
  if num_samples < 0:
    raise ValueError(f'num_samples={num_samples}: expected >= 0')
  streams = jnp.arange(first_stream, first_stream + batch)
  pending, left = np.zeros((batch, 0), np.float32), num_samples
  for c in range(-(-num_samples // model.clip_samples)):
    keys = sampling.stream_keys(rng, c, streams)
    z = jax.vmap(lambda k: model.noise(k, 1)[0])(keys) * temperature
    x = np.asarray(render_streams(model, variables, z))
    pending = np.concatenate([pending, x], axis=1)[:, :left]
    while pending.shape[1] >= min(chunk_samples, left) > 0:
      n = min(chunk_samples, left)
      yield pending[:, :n]
      pending, left = pending[:, n:], left - n
