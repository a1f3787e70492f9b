"""The UMT's pure functions: the gradient reversal layer, and the random local pitch
modulation of the encoder's input (a piecewise-linear time warp, resampled linearly); the
conventions are in models/umt/__init__.py.
"""

import jax
import jax.numpy as jnp


@jax.custom_vjp
def gradient_reversal(x: jax.Array, scale) -> jax.Array:
  """Identity forward; backward, the gradient times -scale (Ganin and Lempitsky 2015)."""
  del scale
  return x


def _reversal_fwd(x, scale):
  return x, scale


def _reversal_bwd(scale, g):
  return (-scale * g).astype(g.dtype), jnp.zeros_like(scale)


gradient_reversal.defvjp(_reversal_fwd, _reversal_bwd)


def _window_samples(sample_rate: int, seconds: tuple[float, float]) -> tuple[int, int]:
  lo, hi = (max(1, int(round(s * sample_rate))) for s in seconds)
  return lo, hi


def warp_windows(rng: jax.Array, length: int, sample_rate: int, semitones: float = 0.5,
                 seconds: tuple[float, float] = (0.25, 0.5)) -> tuple[jax.Array, jax.Array]:
  """The pitch modulation's windows over a crop of `length` samples: (starts [n] int32, rates
  [n] float32); window w covers samples [starts[w], starts[w + 1]), its length uniform in
  `seconds`, its rate 2^(s / 12) with s uniform in [-semitones, semitones]; starts[0] <= 0 (a
  random phase within the first window) and the last window reaches past the crop."""
  lo, hi = _window_samples(sample_rate, seconds)
  n = length // lo + 2  # windows enough to cover the crop from a phase of up to one window
  k_size, k_shift, k_phase = jax.random.split(rng, 3)
  sizes = jax.random.randint(k_size, (n,), lo, hi + 1)
  rates = 2. ** (jax.random.uniform(k_shift, (n,), minval=-semitones, maxval=semitones) / 12.)
  phase = jax.random.randint(k_phase, (), 0, sizes[0])
  starts = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(sizes[:-1])]) - phase
  return starts.astype(jnp.int32), rates.astype(jnp.float32)


def warp_positions(rng: jax.Array, length: int, sample_rate: int, semitones: float = 0.5,
                   seconds: tuple[float, float] = (0.25, 0.5)) -> jax.Array:
  """The positions [length] (float32, increasing) at which a pitch-modulated crop reads its
  input: slope rates[w] over window w of `warp_windows` (module docstring); position
  length // 2 reads itself."""
  starts, rates = warp_windows(rng, length, sample_rate, semitones, seconds)
  # Each window's first position, relative to window 0's start: exact sums of whole windows.
  base = jnp.concatenate([jnp.zeros(1), jnp.cumsum(rates[:-1] * jnp.diff(starts))])
  t = jnp.arange(length)
  w = jnp.searchsorted(starts, t, side='right') - 1
  p = base[w] + rates[w] * (t - starts[w])
  return p - p[length // 2] + length // 2


def resample(audio: jax.Array, positions: jax.Array) -> jax.Array:
  """audio [T] read at `positions` [N] by linear interpolation (clamped to the ends)."""
  t = audio.shape[-1]
  p = jnp.clip(positions, 0., t - 1.)
  i = jnp.clip(jnp.floor(p).astype(jnp.int32), 0, max(t - 2, 0))
  frac = (p - i).astype(audio.dtype)
  return audio[i] * (1. - frac) + audio[jnp.minimum(i + 1, t - 1)] * frac


def pitch_modulate(rng: jax.Array, audio: jax.Array, sample_rate: int, semitones: float = 0.5,
                   seconds: tuple[float, float] = (0.25, 0.5)) -> jax.Array:
  """Float audio [B, T] with each row time-warped by its own `warp_positions` (row b draws
  with fold_in(rng, b))."""
  b, t = audio.shape
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(b))
  warp = jax.vmap(lambda k: warp_positions(k, t, sample_rate, semitones, seconds))(keys)
  return jax.vmap(resample)(audio, warp)
