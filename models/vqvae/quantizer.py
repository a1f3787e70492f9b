"""The vector quantiser of a VQ-VAE level: nearest-code assignment, the straight-through
estimator, the commitment loss, and a codebook kept by exponential moving averages with restarts
of dead codes (van den Oord et al. 2017, appendix; Razavi et al. 2019; Dhariwal et al. 2020).

The codebook is model state, not parameters: the level's 'vq' collection holds
  embedding     [K, D]  the codes' vectors e_k
  cluster_size  [K]     N_k, the moving average of the number of vectors assigned to code k
  embed_sum     [K, D]  M_k, the moving average of their sum
and a training step updates it from the batch's assignments (weights w_i: the rows a batch's
mask keeps), with decay g and Laplace smoothing eps:
  N_k <- g N_k + (1 - g) sum_i w_i [c_i = k]
  M_k <- g M_k + (1 - g) sum_i w_i [c_i = k] z_i
  e_k  = M_k / ((N_k + eps) / (sum_j N_j + K eps) sum_j N_j)
A code whose N_k falls below `threshold` is dead: it restarts at an encoder output drawn
uniformly from the batch (Jukebox's restart), its N_k set to `threshold` and M_k to that vector
times `threshold`, so that it stays where it was put until data moves it or it dies again. A
fresh codebook (every N_k = 0) therefore starts from the first batch's encodings.

All functions are pure and float32; nothing here depends on the rest of the level.
"""

import jax
import jax.numpy as jnp

EPS = 1e-5  # Laplace smoothing of the cluster sizes


def init_state(rng: jax.Array, size: int, dim: int) -> dict:
  """A codebook before training: random vectors, zero counts (every code dead: the first
  training step restarts them all from the batch)."""
  return {'embedding': jax.random.normal(rng, (size, dim), jnp.float32),
          'cluster_size': jnp.zeros((size,), jnp.float32),
          'embed_sum': jnp.zeros((size, dim), jnp.float32)}


def nearest(embedding: jax.Array, z: jax.Array) -> jax.Array:
  """The index [...] of the code nearest to each vector of z [..., D] (squared distance)."""
  z = z.astype(jnp.float32)
  d = (jnp.sum(jnp.square(z), -1, keepdims=True) - 2. * z @ embedding.T +
       jnp.sum(jnp.square(embedding), -1))
  return jnp.argmin(d, axis=-1).astype(jnp.int32)


def quantize(embedding: jax.Array, z: jax.Array):
  """(z_q, codes, squared error [...]) of z [..., D]: z_q is the nearest code's vector in the
  forward pass and passes the gradient straight through to z (z + sg(e - z)); the squared error
  |z - sg(e)|^2 / D per vector is the commitment term, whose gradient reaches z only."""
  codes = nearest(jax.lax.stop_gradient(embedding), z)
  e = jax.lax.stop_gradient(embedding[codes])
  z_q = z + jax.lax.stop_gradient(e - z)
  return z_q, codes, jnp.mean(jnp.square(z.astype(jnp.float32) - e), axis=-1)


def usage(codes: jax.Array, weights: jax.Array, size: int) -> jax.Array:
  """sum_i w_i [c_i = k] for each code k: codes and weights [...] -> [K]."""
  return jnp.zeros((size,), jnp.float32).at[codes.reshape(-1)].add(
      weights.reshape(-1).astype(jnp.float32))


def perplexity(counts: jax.Array) -> jax.Array:
  """exp(entropy) of the code distribution counts [K] / sum(counts): from 1 (one code) to K."""
  p = counts / jnp.maximum(jnp.sum(counts), 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.)), 0.)))


def ema_update(state: dict, z: jax.Array, codes: jax.Array, weights: jax.Array,
               decay: float) -> dict:
  """The codebook after one batch (module docstring), before restarts: z [..., D], codes and
  weights [...]."""
  z = jax.lax.stop_gradient(z.astype(jnp.float32)).reshape(-1, z.shape[-1])
  size = state['embedding'].shape[0]
  w = weights.reshape(-1).astype(jnp.float32)
  counts = usage(codes, weights, size)
  sums = jnp.zeros_like(state['embed_sum']).at[codes.reshape(-1)].add(z * w[:, None])
  n = decay * state['cluster_size'] + (1. - decay) * counts
  m = decay * state['embed_sum'] + (1. - decay) * sums
  total = jnp.sum(n)
  smoothed = (n + EPS) / (total + size * EPS) * total
  return {'embedding': m / jnp.maximum(smoothed, 1e-12)[:, None], 'cluster_size': n,
          'embed_sum': m}


def restart_dead(state: dict, z: jax.Array, rng: jax.Array, threshold: float) -> tuple:
  """(state with its dead codes restarted at random vectors of z [..., D], the fraction of codes
  that were dead)."""
  z = jax.lax.stop_gradient(z.astype(jnp.float32)).reshape(-1, z.shape[-1])
  size = state['embedding'].shape[0]
  dead = state['cluster_size'] < threshold
  pick = z[jax.random.randint(rng, (size,), 0, z.shape[0])]  # [K, D]
  keep = lambda old, new: jnp.where(dead.reshape(-1, *([1] * (old.ndim - 1))), new, old)
  return {'embedding': keep(state['embedding'], pick),
          'cluster_size': keep(state['cluster_size'], jnp.full((size,), threshold, jnp.float32)),
          'embed_sum': keep(state['embed_sum'], pick * threshold)}, jnp.mean(dead)
