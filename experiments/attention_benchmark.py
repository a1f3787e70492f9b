"""The attention benchmark's pieces (experiments/benchmark.py --what=attention): dense causal
attention in chunks for lengths whose scores do not fit, compiling and timing a forward +
backward pass, and the time exponent against the length."""

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def wall_times(fn, repeats: int) -> list[float]:
  """Wall seconds of each of `repeats` calls of `fn()`."""
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return times


def rate_range(work: float, seconds: list[float]) -> list[float]:
  """[least, most] of work / seconds over the timed windows: the spread of a median rate."""
  return [work / max(seconds), work / min(seconds)]


def median_time(fn, repeats: int) -> float:
  """Median wall seconds of `fn()` over `repeats` calls."""
  return statistics.median(wall_times(fn, repeats))


def time_exponent(lengths: list[int], seconds: list[float | None]) -> float | None:
  """Least-squares slope of log(seconds) against log(n); None below 2 measured lengths."""
  pts = [(n, t) for n, t in zip(lengths, seconds) if t is not None]
  if len(pts) < 2:
    return None
  return float(np.polyfit(*np.log(np.array(pts, float)).T, 1)[0])


def dense_in_chunks(q, k, v, chunk: int):
  """Causal dense attention, `chunk` queries at a time, each chunk rematerialised in the backward
  pass: the dense FLOPs in O(chunk x n) memory, for lengths whose n x n scores do not fit."""
  b, n, h, d = q.shape
  qs = q.reshape(b, n // chunk, chunk, h, d).swapaxes(0, 1)  # [n / chunk, B, chunk, H, D]

  @jax.checkpoint
  def one(args):
    qc, i = args
    s = jnp.einsum('bqhd,bkhd->bhqk', qc, k, preferred_element_type=jnp.float32) / np.sqrt(d)
    allowed = jnp.arange(n)[None, :] <= i * chunk + jnp.arange(chunk)[:, None]  # [chunk, n]
    p = jax.nn.softmax(jnp.where(allowed, s, -jnp.inf), axis=-1)
    return jnp.einsum('bhqk,bkhd->bqhd', p.astype(v.dtype), v)

  out = jax.lax.map(one, (qs, jnp.arange(n // chunk)))
  return out.swapaxes(0, 1).reshape(b, n, h, d)


def compile_attention(fn, shape: tuple[int, ...], dtype):
  """The compiled forward + backward pass of sum(fn(q, k, v)) and its peak memory in GiB
  (argument + output + scratch bytes; None where the backend does not say)."""
  loss = lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32))
  x = jax.ShapeDtypeStruct(shape, dtype)
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x).compile()
  m = compiled.memory_analysis()
  if m is None:
    return compiled, None
  return compiled, (m.temp_size_in_bytes + m.argument_size_in_bytes +
                    m.output_size_in_bytes) / 2**30


def time_attention(compiled, shape: tuple[int, ...], dtype, repeats: int) -> float:
  """Median seconds of `compiled` on random q, k, v, after a warm-up."""
  q, k, v = (jax.random.normal(r, shape, dtype) for r in jax.random.split(jax.random.key(0), 3))
  run = lambda: jax.block_until_ready(compiled(q, k, v))
  run()
  return median_time(run, repeats)
