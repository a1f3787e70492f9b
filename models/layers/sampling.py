"""Drawing samples: Gumbel-max or the inverse CDF over logits, per-stream keys, and host threads
for streams.

Every sampler draws the value at position t of stream i with the key
fold_in(fold_in(rng, t), i), so that its draws do not depend on chunking, on which other
streams are sampled beside it, or on how the streams are split over threads or processes.
"""

from collections.abc import Callable, Iterator
import concurrent.futures
import os

import jax
import jax.numpy as jnp
import numpy as np


def stream_key(rng: jax.Array, t, stream) -> jax.Array:
  """The key of position t of stream `stream`."""
  return jax.random.fold_in(jax.random.fold_in(rng, t), stream)


def stream_keys(rng: jax.Array, t, streams: jax.Array) -> jax.Array:
  """The keys of position t of each of `streams` [B] -> [B] keys."""
  return jax.vmap(lambda i: stream_key(rng, t, i))(streams)


def argmax(x: jax.Array) -> jax.Array:
  """jnp.argmax over the last axis (first maximum) as two plain reductions, which XLA:CPU
  vectorises (its variadic argmax reduction is ~3x slower)."""
  i = jnp.arange(x.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(x == jnp.max(x, -1, keepdims=True), i, x.shape[-1]), -1)


def gumbel_max(logits: jax.Array, noise: jax.Array, temperature) -> jax.Array:
  """Categorical draws from `logits` [..., Q] given Gumbel `noise` of the same shape
  (jax.random.categorical's draw); temperature 0 is the argmax."""
  temperature = jnp.maximum(jnp.asarray(temperature, jnp.float32), 1e-6)
  return argmax(logits.astype(jnp.float32) / temperature + noise)


def cumsum(p: jax.Array) -> jax.Array:
  """Inclusive cumulative sums over the last axis [..., Q] as small matmuls over a g x Q/g
  grid (g the largest divisor of Q up to sqrt(Q)): XLA:CPU lowers jnp.cumsum to a window
  reduction, O(Q^2) adds per row."""
  q = p.shape[-1]
  g = max(d for d in range(1, int(q ** .5) + 1) if q % d == 0)
  tri = lambda n: jnp.triu(jnp.ones((n, n), p.dtype))  # [i, j] = 1 for i <= j
  inner = p.reshape(*p.shape[:-1], g, q // g) @ tri(q // g)  # within each group
  before = inner[..., -1] @ (tri(g) - jnp.eye(g, dtype=p.dtype))  # the earlier groups' totals
  return (inner + before[..., None]).reshape(p.shape)


def inverse_cdf(logits: jax.Array, u: jax.Array, temperature) -> jax.Array:
  """Categorical draws from `logits` [..., Q] given one uniform `u` [...] in [0, 1) per row:
  the least k whose cumulative probability exceeds u (a class of zero probability is never
  drawn); temperature 0 is the argmax. One random number per draw, where Gumbel-max takes Q:
  the draws were a quarter of a 1-stream WaveNet sampler step."""
  temperature = jnp.maximum(jnp.asarray(temperature, jnp.float32), 1e-6)
  x = logits.astype(jnp.float32) / temperature
  c = cumsum(jnp.exp(x - jnp.max(x, -1, keepdims=True)))
  k = jnp.sum(c <= u[..., None] * c[..., -1:], -1, dtype=jnp.int32)
  return jnp.minimum(k, logits.shape[-1] - 1)


def sample_logits(rng: jax.Array, logits: jax.Array, temperature) -> jax.Array:
  """One draw per row of `logits` [..., Q] -> int32 [...]."""
  return gumbel_max(logits, jax.random.gumbel(rng, logits.shape, jnp.float32), temperature)


def softmax_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """-log softmax(logits)[targets] in nats: [..., Q] x [...] int -> [...] float32."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]


def host_parts(b: int) -> list[tuple[int, int]]:
  """Streams [lo, hi) per host thread. XLA:CPU runs a loop on one core, so on the CPU backend
  each core takes a share of the streams; an accelerator takes them all at once."""
  cores = 1
  if jax.default_backend() == 'cpu':
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  edges = np.linspace(0, b, min(cores, b) + 1).round().astype(int)
  return list(zip(edges[:-1], edges[1:]))


def over_threads(b: int, part: Callable[[int, int], Iterator[np.ndarray]]
                 ) -> Iterator[np.ndarray]:
  """Runs the chunk generators part(lo, hi) of `host_parts(b)` side by side in threads and
  yields their chunks [B, n] concatenated over streams, in order."""
  gens = [part(lo, hi) for lo, hi in host_parts(b)]
  if len(gens) == 1:
    yield from gens[0]
    return
  with concurrent.futures.ThreadPoolExecutor(len(gens)) as pool:
    while (chunks := list(pool.map(lambda g: next(g, None), gens)))[0] is not None:
      yield np.concatenate(chunks)
