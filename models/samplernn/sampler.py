"""SampleRNN's cached sampler: each tier steps at its own rate from its recurrent state.

The cache of a batch of streams:

    't'       int32 []        u: the next prediction is of position C + u (C = the top frame
                              size, the context every crop starts with); negative while the
                              first C codes are fed
    'window'  [B, C] int32    the last C codes before it
    'state'   per tier, per layer: the recurrent state [B, S, D]
    'cond'    per tier: its last upsampled output [B, r, D], the conditioning of the r steps
              of the tier below (or samples) until its next step

`step(model, p, cache, x)` appends the code x [B] of position C + u - 1 to the window and
returns the logits [B, Q] of position C + u: a frame tier of frame F runs its recurrent step
(lax.cond) only when u is a multiple of F, so a step costs the MLP and, every F samples, one step of
that tier. It computes exactly what the parallel pass (`model.subsequence`) computes.
"""

from collections.abc import Iterator
import functools

import jax
import jax.numpy as jnp
import numpy as np

from models.layers import autoregressive
from models.layers import sampling
from models.samplernn.model import cell
from models.samplernn.model import frame_input
from models.samplernn.model import initial_state
from models.samplernn.model import mlp_logits
from models.samplernn.model import Model
from models.samplernn.model import unboxed_params


def init_cache(model: Model, batch: int, p: dict | None = None) -> dict:
  """The cache before position 0: silent codes, the initial states (learned ones from `p`, else
  zeros) and zero conditioning; feed it C codes (a prompt) before the first prediction."""
  c, d = model.context, model.dim
  if p is None:
    states = [[jnp.zeros((batch, 2 if model.rnn == 'lstm' else 1, d))
               for _ in range(model.rnn_layers)] for _ in model.frame_sizes]
  else:
    states = initial_state(model, p, batch)
  return {'t': jnp.int32(1 - c),  # C codes in, the last of them predicts position C
          'window': jnp.full((batch, c), model.num_classes // 2, jnp.int32),
          'state': states,
          'cond': [jnp.zeros((batch, r, d)) for r in model.ratios]}


def step(model: Model, p: dict, cache: dict, x: jax.Array) -> tuple[jax.Array, dict]:
  """Appends x [B] (the code of position C + u - 1) and returns (logits [B, Q] of position
  C + u, cache); while u < 0 (the context is being fed) the logits mean nothing."""
  window = jnp.concatenate([cache['window'][:, 1:], x[:, None].astype(jnp.int32)], axis=1)
  u = cache['t']  # predicted samples so far: the top tier's steps start at u = 0
  states, conds = list(cache['state']), list(cache['cond'])
  inputs = frame_input(model, window)
  above = None
  for k, (frame, ratio) in enumerate(zip(model.frame_sizes, model.ratios)):
    tier = p[f'tier{k}']
    upper = above  # the conditioning of this tier's step, from the tier above

    def run(states_k, k=k, frame=frame, tier=tier, upper=upper):
      h = inputs[:, -frame:] @ tier['in']['kernel'] + tier['in']['bias']
      if upper is not None:
        h = h + upper
      new = []
      for l, state in enumerate(states_k):
        q = tier[f'rnn{l}']
        xg = jnp.einsum('bd,dgh->bgh', h, q['x']['kernel']) + q['x']['bias']
        state, h = cell(model, q, state, xg)
        new.append(state)
      up = jnp.einsum('bd,dre->bre', h, tier['up']['kernel']) + tier['up']['bias']
      return new, up

    active = (u >= 0) & (u % frame == 0)
    states[k], conds[k] = jax.lax.cond(active, run, lambda s, k=k: (s, conds[k]), states[k])
    # the conditioning of the tier below (or the MLP) at this position
    above = jnp.take(conds[k], jnp.maximum(u, 0) % frame // (frame // ratio), axis=1)
  f = model.frame_sizes[-1]
  logits = mlp_logits(model, p, window[:, -f:], above)
  return logits, {'t': u + 1, 'window': window, 'state': states, 'cond': conds}


def _draw(rng, t, logits, temperature, stream0):
  """Codes at position t of streams stream0 + [0, B) from their logits [B, Q]."""
  keys = sampling.stream_keys(rng, t, stream0 + jnp.arange(logits.shape[0]))
  return jax.vmap(sampling.sample_logits, (0, 0, None))(keys, logits, temperature)


@functools.partial(jax.jit, static_argnums=(0, 6), donate_argnums=(2,))
def _run(model: Model, p: dict, cache: dict, x: jax.Array, rng: jax.Array,
         temperature: jax.Array, n: int, forced: jax.Array | None, stream0: jax.Array):
  """n steps of streams stream0 + [0, B) from their last codes x [B]: sampled, or the codes
  `forced` [B, n] (a prompt) -> (cache, the last codes [B], codes [B, n])."""
  def body(carry, forced_t):
    cache, x = carry
    logits, cache = step(model, p, cache, x)
    if forced_t is None:  # the draw at position C + u
      x = _draw(rng, cache['t'] - 1 + model.context, logits, temperature, stream0)
    else:
      x = forced_t
    return (cache, x), x

  xs = None if forced is None else forced.T
  (cache, x), codes = jax.lax.scan(body, (cache, x), xs, length=n)
  return cache, x, codes.T


_unboxed = jax.jit(unboxed_params, static_argnums=(0,))


def sample_codes(model: Model, variables: dict, rng: jax.Array, num_samples: int,
                 batch: int = 1, prompt: np.ndarray | None = None, temperature: float = 1.0,
                 chunk_samples: int = 16000, first_stream: int = 0, resume: dict | None = None,
                 keep: dict | None = None) -> Iterator[np.ndarray]:
  """Yields `num_samples` new codes per stream as host chunks [B, <= chunk_samples], with the
  arguments of every code sampler (models/layers/autoregressive.py; the draw of position t of
  stream i keyed fold_in(fold_in(rng, t), i), so chunking and the other streams change nothing).
  A prompt's first C (top frame) codes are its context, silent before a shorter prompt, and
  the rest is teacher-forced; default one silent code (not yielded).
  """
  temperature, stream0 = jnp.float32(temperature), jnp.int32(first_stream)
  p = _unboxed(model, variables)
  if resume is None:
    cache, x = _start(model, p, rng, batch, prompt, temperature, chunk_samples, stream0)
  else:
    cache, x = resume['cache'], resume['x']
  autoregressive.keep_state(keep, cache, x)
  for s in range(0, num_samples, chunk_samples):
    n = min(chunk_samples, num_samples - s)
    cache, x, codes = _run(model, p, cache, x, rng, temperature, n, None, stream0)
    autoregressive.keep_state(keep, cache, x)
    yield np.asarray(codes)


def _start(model: Model, p: dict, rng, batch: int, prompt, temperature, chunk_samples: int,
           stream0) -> tuple[dict, jax.Array]:
  """(cache, last code) after a prompt (default one silent code), its first C codes the
  context and the rest teacher-forced."""
  if prompt is None:
    prompt = np.full((batch, 1), model.num_classes // 2, np.int32)
  prompt = np.asarray(prompt, np.int32)
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f'prompt of shape {prompt.shape}: expected codes [B, P], P >= 1')
  c = model.context
  if prompt.shape[1] < c:  # the training crops start with C codes of context
    prompt = np.concatenate([np.full((prompt.shape[0], c - prompt.shape[1]),
                                     model.num_classes // 2, np.int32), prompt], axis=1)
  cache = init_cache(model, prompt.shape[0], p)
  cache['window'] = jnp.concatenate(  # as if fed codes 0 .. C - 2
      [cache['window'][:, :1], jnp.asarray(prompt[:, :c - 1])], axis=1)
  cache['t'] = jnp.int32(0)
  x = jnp.asarray(prompt[:, c - 1])  # its step predicts position C
  for s in range(c, prompt.shape[1], chunk_samples):  # teacher-force the rest of the prompt
    forced = jnp.asarray(prompt[:, s:s + chunk_samples])
    cache, x, _ = _run(model, p, cache, x, rng, temperature, forced.shape[1], forced, stream0)
  return cache, x
