"""The KV-cache sampler of the Sparse Transformer, the naive reference, and `sample_codes`.

The cache holds, per layer, the keys and values of the current window [B, L, H, D] (L =
max_length) and the window's codes [B, L]; 't' is the absolute position of the next input and
'pos' its position in the window. A step embeds one code, writes its k, v at 'pos' and attends
with `attention.attend_step` (O(block + L / block) keys). When the window is full (pos == L)
the next step starts the window of `window_start`: the last L - L/2 codes, re-prefilled by
one parallel forward pass (`shift`), so that the sampler computes position t exactly as the
parallel `Model.__call__` does over any length. The caches take 2 N L E values per stream:
12.9 GB in float32 for the paper's 48 x 512 model at L = 65,536 (half in bfloat16).
"""

from collections.abc import Iterator
import functools

import jax
import jax.numpy as jnp
import numpy as np

from models import attention as attention_lib
from models.layers import autoregressive
from models.layers import sampling
from models.sparse_transformer.model import embed
from models.sparse_transformer.model import heads_apply
from models.sparse_transformer.model import hidden
from models.sparse_transformer.model import layer
from models.sparse_transformer.model import logits
from models.sparse_transformer.model import Model
from models.sparse_transformer.model import sample_logits
from models.sparse_transformer.model import unboxed_params
from models.sparse_transformer.model import window_start


def init_cache(model: Model, batch: int) -> dict:
  """The sampler's state before the first input: an empty window at position 0."""
  shape = (batch, model.max_length, model.num_heads, model.head_dim)
  zeros = lambda: [jnp.zeros(shape, jnp.dtype(model.dtype)) for _ in range(model.num_layers)]
  return {'t': jnp.zeros((), jnp.int32), 'pos': jnp.zeros((), jnp.int32),
          'codes': jnp.zeros((batch, model.max_length), jnp.int32), 'k': zeros(), 'v': zeros()}


def _fill(model: Model, p: dict, cache: dict, codes: jax.Array) -> dict:
  """The window's caches after its first S positions, `codes` [B, S] (S static, <= L), from one
  parallel pass; positions beyond S hold padding until steps overwrite them."""
  s = codes.shape[1]
  _, kvs = hidden(model, p, codes)  # k, v [B, S', H, D], S' = S rounded up to a block
  put = lambda c, x: jax.lax.dynamic_update_slice_in_dim(c, x.astype(c.dtype), 0, axis=1)
  return dict(cache, pos=jnp.int32(s), codes=put(cache['codes'], codes),
              k=[put(c, k) for c, (k, _) in zip(cache['k'], kvs)],
              v=[put(c, v) for c, (_, v) in zip(cache['v'], kvs)])


@functools.partial(jax.jit, static_argnums=(0,))
def prefill(model: Model, p: dict, codes: jax.Array) -> dict:
  """The cache after teacher-forcing codes [B, S] at positions 0 .. S - 1 (any S >= 0): the
  window of position S - 1, filled by one parallel forward pass instead of S steps."""
  b, s = codes.shape
  cache = init_cache(model, b)
  if s == 0:
    return cache
  w = window_start(model, s - 1)
  return dict(_fill(model, p, cache, codes[:, w:]), t=jnp.int32(s))


def shift(model: Model, p: dict, cache: dict) -> dict:
  """A full window (pos == L) -> the next one: its last L - L/2 codes re-prefilled at 0."""
  half = model.max_length // 2
  return _fill(model, p, cache, cache['codes'][:, half:])


def _step(model: Model, p: dict, cache: dict, codes: jax.Array) -> tuple[jax.Array, dict]:
  """`step` for pos < L (no window change)."""
  pos = cache['pos']
  x = embed(model, p, codes.astype(jnp.int32), pos)  # [B, E]
  ks, vs = [], []
  for i, patterns in enumerate(model.patterns):
    def attend(q, k, v, i=i, patterns=patterns):  # [B, H, D] x 3
      put = lambda c, x: jax.lax.dynamic_update_index_in_dim(c, x.astype(c.dtype), pos, 1)
      kc, vc = put(cache['k'][i], k), put(cache['v'][i], v)
      one = lambda pat, q, kc, vc: attention_lib.attend_step(q, kc, vc, pos, pat, model.block,
                                                             model.summary)
      return heads_apply(patterns, one, q, kc, vc), (kc, vc)
    x, (kc, vc) = layer(model, p[f'layer{i}'], x, pos, attend)
    ks.append(kc)
    vs.append(vc)
  codes_buf = jax.lax.dynamic_update_index_in_dim(cache['codes'], codes.astype(jnp.int32), pos, 1)
  cache = {'t': cache['t'] + 1, 'pos': pos + 1, 'codes': codes_buf, 'k': ks, 'v': vs}
  return logits(model, p, x), cache


def step(model: Model, p: dict, cache: dict, codes: jax.Array) -> tuple[jax.Array, dict]:
  """One position: the input codes [B] at cache['t'] -> (logits [B, Q] float32, cache).

  `p` is the nested parameter dict (`unboxed_params`). At a window boundary the step first
  re-prefills the next window (`shift`, inside a lax.cond: XLA runs only the taken branch; on
  CPU a scanned step with the cond ran as fast as one without it, so the caches are not
  copied through the other).
  """
  full = cache['pos'] == model.max_length
  cache = jax.lax.cond(full, lambda c: shift(model, p, c), lambda c: c, cache)
  return _step(model, p, cache, codes)


def _draw(rng, t, out, temperature, stream0=0):
  """Codes at position t of streams stream0 + [0, B) from their logits out [B, Q]."""
  keys = sampling.stream_keys(rng, t, stream0 + jnp.arange(out.shape[0]))
  return jax.vmap(sample_logits, (0, 0, None))(keys, out, temperature)


@functools.partial(jax.jit, static_argnums=(0, 6), donate_argnums=(2,))
def _run(model: Model, p: dict, cache: dict, x: jax.Array, rng: jax.Array,
         temperature: jax.Array, n: int, stream0: jax.Array):
  """n sampled steps of streams stream0 + [0, B) from their input codes x [B] -> (cache, the
  last codes [B], codes [B, n])."""
  def body(carry, _):
    cache, x = carry
    out, cache = step(model, p, cache, x)
    x = _draw(rng, cache['t'], out, temperature, stream0)  # the code at the new cache['t']
    return (cache, x), x

  (cache, x), codes = jax.lax.scan(body, (cache, x), length=n)
  return cache, x, codes.T  # [B, n]


_unboxed = jax.jit(unboxed_params, static_argnums=(0,))


def sample_codes(model: Model, variables: dict, rng: jax.Array, num_samples: int,
                 batch: int = 1, prompt: np.ndarray | None = None, temperature: float = 1.0,
                 chunk_samples: int = 16000, first_stream: int = 0, resume: dict | None = None,
                 keep: dict | None = None) -> Iterator[np.ndarray]:
  """Yields `num_samples` new codes per stream as host chunks [B, <= chunk_samples]; the
  family's `generate` decodes them to audio.

  Args:
    model, variables: the model and its {'params': ...}.
    rng: a PRNG key; the code at position t of stream i draws with
      fold_in(fold_in(rng, t), i), whatever the chunking and the other streams.
    num_samples: codes to generate after the prompt; any number: past max_length the
      windows slide as in `Model.__call__` (module docstring).
    batch: streams, when there is no prompt.
    prompt: codes [B, P] to continue, prefilled by one parallel pass; default one silent code
      (num_classes // 2) per stream (not yielded).
    temperature: divides the logits; 0 draws the most likely code.
    chunk_samples: steps per yielded chunk; memory does not grow with num_samples.
    first_stream: the number of stream 0 in the draws above: processes that each sample a
      slice [k, k + B) of a set of streams pass k, and together draw what one process would.
    resume, keep: the sampler's state {'cache', 'x'} to continue from (instead of a prompt),
      and a dict whose 'state' is set to the state before the first chunk and after each (valid
      until the next chunk is asked for): a stream saved and resumed draws what it would have
      drawn without the pause (layers/autoregressive.py).
  """
  p = _unboxed(model, variables)
  if resume is None:
    if prompt is None:
      prompt = np.full((batch, 1), model.num_classes // 2, np.int32)
    prompt = np.asarray(prompt, np.int32)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
      raise ValueError(f'prompt of shape {prompt.shape}: expected codes [B, P], P >= 1')
    cache = prefill(model, p, jnp.asarray(prompt[:, :-1]))
    x = jnp.asarray(prompt[:, -1])  # the input at position P - 1
  else:
    cache, x = resume['cache'], resume['x']
  temperature = jnp.float32(temperature)
  autoregressive.keep_state(keep, cache, x)
  for s in range(0, num_samples, chunk_samples):
    cache, x, codes = _run(model, p, cache, x, rng, temperature,
                           min(chunk_samples, num_samples - s), jnp.int32(first_stream))
    autoregressive.keep_state(keep, cache, x)
    yield np.asarray(codes)


@functools.partial(jax.jit, static_argnums=(0, 3))
def naive_generate(model: Model, variables: dict, rng: jax.Array, n: int,
                   prompt: jax.Array) -> jax.Array:
  """The reference sampler: n steps, each a full parallel forward pass over the window of the
  input's position (`window_start`). prompt [B, P] holds positions 0 .. P - 1; returns the
  codes at P .. P + n - 1 [B, n], drawn as `sample_codes` draws them."""
  b, s = prompt.shape
  ell = model.max_length
  buf = jnp.concatenate([prompt, jnp.zeros((b, n + ell), jnp.int32)], axis=1)

  def body(buf, t):  # t: the input's position
    w = window_start(model, t)
    win = jax.lax.dynamic_slice_in_dim(buf, w, ell, axis=1)  # [B, L]; causal: tail unused
    out = jax.lax.dynamic_index_in_dim(model.apply(variables, win), t - w, 1, False)  # [B, Q]
    x = _draw(rng, t + 1, out, 1.)
    return jax.lax.dynamic_update_index_in_dim(buf, x, t + 1, 1), x

  _, codes = jax.lax.scan(body, buf, s - 1 + jnp.arange(n))
  return codes.T
