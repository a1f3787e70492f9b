"""The Music Transformer (Huang et al. 2019): a Transformer decoder over performance events
(data/midi_events.py) whose attention adds learned relative-position logits, computed by
skewing (models/relative_attention.py), and its KV-cache sampler.

    events [B, T] --embedding (vocabulary + a start token)--> x [B, T, E]
      --N x (x + attention(LN(x)) with relative logits, x + MLP(LN(x)))--> LN -> logits [B, T, V]

There are no absolute positions: order enters only through the causal mask and the relative
logits, one vector per head and distance 0 .. `max_distance` - 1 (longer distances share the
last). The blocks are the Sparse Transformer's (models/sparse_transformer/model.py: `layer`,
pre-norm, GELU MLP, residual projections scaled by 1/sqrt(2N)) with dense relative attention.

A sequence starts with `start_token` (= vocab_size): input [start, e_0, ..., e_{T-2}] predicts
[e_0, ..., e_{T-1}], so every event of a piece is scored (`nll`). The sampler (`init_cache`,
`step`, `sample_events`) keeps each layer's keys and values [B, L, H, D] (L = `max_length`)
and attends one query against them per event; a primer is teacher-forced through the same
steps. Draws use the per-stream keys of models/layers/sampling.py and the inverse CDF, so a
stream's events do not depend on the other streams.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from data import midi_events
from data import synth
from models import relative_attention
from models.layers import params as params_lib
from models.layers import sampling
from models.sparse_transformer.model import constrain
from models.sparse_transformer.model import layer
from models.sparse_transformer.model import logits


class Model(nn.Module):
  """Music Transformer; logical axes: batch, time, embed, heads, kv, mlp, vocab."""
  vocab_size: int = midi_events.VOCAB_SIZE
  max_length: int = 2048  # events per sequence, the start token included
  max_distance: int = 2048  # relative distances with a vector of their own
  num_layers: int = 6
  embed_dim: int = 512
  num_heads: int = 8
  attention_dim: int = 0  # query/key/value channels over all heads; 0: embed_dim
  mlp_dim: int = 2048
  sample_rate: int = 16000  # what `generate` renders the events at (a data fact: input.sample_rate)
  dtype: str = 'float32'  # activations and matmuls; norms, softmax and logits stay float32
  param_dtype: str = 'float32'
  positions = 'relative'  # (not a field) the shared block adds no rotary positions
  conditions = ()  # (not a field) batch keys read besides the events: none

  def __post_init__(self):
    if (self.attention_dim or self.embed_dim) % self.num_heads:
      raise ValueError(f'model.attention_dim={self.attention_dim or self.embed_dim}: expected a '
                       f'multiple of model.num_heads={self.num_heads}')
    if self.max_distance < 1 or self.max_length < 2:
      raise ValueError(f'model.max_distance={self.max_distance}, model.max_length='
                       f'{self.max_length}: expected at least 1 and 2')
    super().__post_init__()

  @property
  def head_dim(self) -> int:
    return (self.attention_dim or self.embed_dim) // self.num_heads

  @property
  def start_token(self) -> int:
    return self.vocab_size

  @nn.compact
  def _params(self) -> dict:
    """Creates (init) or fetches (apply) every parameter, as the nested dict the sampler uses."""
    e, h, d, m = self.embed_dim, self.num_heads, self.head_dim, self.mlp_dim
    res = 1. / (2 * self.num_layers)  # the residual projections' variance scale
    p = {'embed': params_lib.param(self, 'embed', (self.vocab_size + 1, e),
                                   ('vocab', 'embed'), nn.initializers.normal(1.))}
    for i in range(self.num_layers):
      p[f'layer{i}'] = {
          'ln1': params_lib.layer_norm(self, f'l{i}_ln1', e),
          'qkv': params_lib.dense(self, f'l{i}_qkv', e, (3, h, d), 'embed',
                                  (None, 'heads', 'kv')),
          # q . emb has the variance of q . k at init.
          'rel': params_lib.param(self, f'l{i}_rel', (h, self.max_distance, d),
                                  ('heads', None, 'kv'), nn.initializers.normal(d ** -0.5)),
          'out': params_lib.dense(self, f'l{i}_out', (h, d), e, ('heads', 'kv'), 'embed', res),
          'ln2': params_lib.layer_norm(self, f'l{i}_ln2', e),
          'mlp_in': params_lib.dense(self, f'l{i}_mlp_in', e, m, 'embed', 'mlp'),
          'mlp_out': params_lib.dense(self, f'l{i}_mlp_out', m, e, 'mlp', 'embed', res)}
    p['ln_f'] = params_lib.layer_norm(self, 'ln_f', e)
    p['head'] = params_lib.dense(self, 'head', e, self.vocab_size, 'embed', 'vocab')
    return p

  def __call__(self, tokens: jax.Array) -> jax.Array:
    """tokens [B, T] (events, or the start token) -> logits [B, T, V] float32; position t
    predicts tokens[:, t + 1]."""
    if tokens.shape[1] > self.max_length:
      raise ValueError(f'{tokens.shape[1]} events per sequence (input.window): expected at most '
                       f'model.max_length={self.max_length}')
    p = self._params()
    x = _embed(self, p, tokens)
    for i in range(self.num_layers):
      rel = p[f'layer{i}']['rel']
      attend = lambda q, k, v, rel=rel: (relative_attention.attend(q, k, v, rel), None)
      x, _ = layer(self, p[f'layer{i}'], x, None, attend)
    return logits(self, p, x)


def _embed(model: Model, p: dict, tokens: jax.Array) -> jax.Array:
  return constrain(p['embed'][tokens].astype(jnp.dtype(model.dtype)), 'embed')


def unboxed_params(model: Model, variables: dict) -> dict:
  """The nested parameter dict of `variables` ({'params': ...} from init or a checkpoint)."""
  return params_lib.nested(model, variables)


def with_start(model: Model, events: jax.Array) -> jax.Array:
  """events [B, T] -> the model's input [B, T]: the start token, then events[:, :-1]."""
  start = jnp.full(events.shape[:1] + (1,), model.start_token, events.dtype)
  return jnp.concatenate([start, events[:, :-1]], axis=1)


def nll(model: Model, variables: dict, events: jax.Array) -> jax.Array:
  """Negative log-likelihood in nats of every event [B, T] (the first given the start token):
  [B, T]."""
  return sampling.softmax_nll(model.apply(variables, with_start(model, events)), events)


# ------------------------------------------------------------------------------------------------
# The KV-cache sampler.


def init_cache(model: Model, batch: int) -> dict:
  """Empty caches; 't' is the position of the next input."""
  shape = (batch, model.max_length, model.num_heads, model.head_dim)
  zeros = lambda: [jnp.zeros(shape, jnp.dtype(model.dtype)) for _ in range(model.num_layers)]
  return {'t': jnp.zeros((), jnp.int32), 'k': zeros(), 'v': zeros()}


def step(model: Model, p: dict, cache: dict, tokens: jax.Array) -> tuple[jax.Array, dict]:
  """One input token [B] at position cache['t'] -> (logits [B, V], cache): row t of the
  parallel pass."""
  t = cache['t']
  x = _embed(model, p, tokens.astype(jnp.int32))  # [B, E]
  ks, vs = [], []
  for i in range(model.num_layers):
    def attend(q, k, v, i=i):  # [B, H, D] each
      put = lambda c, a: jax.lax.dynamic_update_index_in_dim(c, a.astype(c.dtype), t, 1)
      kc, vc = put(cache['k'][i], k), put(cache['v'][i], v)
      o = relative_attention.attend_step(q, kc, vc, t, p[f'layer{i}']['rel'])
      return o, (kc, vc)
    x, (kc, vc) = layer(model, p[f'layer{i}'], x, None, attend)
    ks.append(kc)
    vs.append(vc)
  return logits(model, p, x), {'t': t + 1, 'k': ks, 'v': vs}


@functools.partial(jax.jit, static_argnums=(0, 5))
def _run(model: Model, p: dict, cache: dict, x: jax.Array, rng: jax.Array, n: int,
         temperature: jax.Array, forced: jax.Array | None, stream0: jax.Array):
  """n steps from input tokens x [B]: the drawn events [B, n] (or `forced` [B, n] taken as
  the next inputs: a primer), and the cache and last input after them."""
  streams = stream0 + jnp.arange(x.shape[0])

  def body(carry, xs):
    cache, x = carry
    out, cache = step(model, p, cache, x)
    if forced is None:  # the event drawn after input t sits at position t + 1
      u = jax.vmap(lambda i: jax.random.uniform(
          sampling.stream_key(rng, cache['t'], i), ()))(streams)
      x = sampling.inverse_cdf(out, u, temperature)
    else:
      x = xs
    return (cache, x), x

  (cache, x), events = jax.lax.scan(body, (cache, x), None if forced is None else forced.T,
                                    length=n)
  return cache, x, events.T


def _draw(model: Model, variables: dict, rng: jax.Array, batch: int, primer: np.ndarray | None,
          temperature: float, first_stream: int, num_events: int,
          seconds: float | None = None) -> np.ndarray:
  """Up to `num_events` new events per stream [B, n] after the primer, drawn in chunks of
  `_CHUNK`; with `seconds`, it stops after the chunk in which every stream's time shifts reach
  that much time."""
  primer = np.zeros((batch, 0), np.int32) if primer is None else np.asarray(primer, np.int32)
  b, plen = primer.shape
  if primer.size and (primer.min() < 0 or primer.max() >= model.vocab_size):
    raise ValueError(f'primer events {primer.min()}..{primer.max()}: expected 0..'
                     f'{model.vocab_size - 1}')
  p = unboxed_params(model, variables)
  cache, x = init_cache(model, b), jnp.full((b,), model.start_token, jnp.int32)
  temperature, stream0 = jnp.float32(temperature), jnp.int32(first_stream)
  if plen:
    cache, x, _ = _run(model, p, cache, x, rng, plen, temperature, jnp.asarray(primer), stream0)
  out, steps = [np.zeros((b, 0), np.int32)], np.zeros(b, np.int64)
  drawn = 0
  while drawn < num_events:
    n = min(_CHUNK, num_events - drawn)
    cache, x, events = _run(model, p, cache, x, rng, n, temperature, None, stream0)
    out.append(np.asarray(events))
    drawn += n
    steps = steps + midi_events.elapsed_steps(out[-1])[:, -1]
    if seconds is not None and steps.min() >= seconds * midi_events.STEPS_PER_SECOND:
      break
  return np.concatenate(out, axis=1)


_CHUNK = 256  # events per compiled sampler call


def sample_events(model: Model, variables: dict, rng: jax.Array, num_events: int,
                  batch: int = 1, primer: np.ndarray | None = None, temperature: float = 1.0,
                  first_stream: int = 0) -> np.ndarray:
  """`num_events` new events per stream [B, num_events] int32, after the start token and the
  `primer` events [B, P] if given. Stream i's event at position t draws with
  fold_in(fold_in(rng, t), first_stream + i), whatever the other streams."""
  plen = 0 if primer is None else np.shape(primer)[1]
  if plen + num_events > model.max_length:  # the start token and all but the last event
    raise ValueError(f'{plen} primer and {num_events} new events need {plen + num_events} '
                     f'positions; model.max_length={model.max_length}')
  return _draw(model, variables, rng, batch, primer, temperature, first_stream, num_events)


# ------------------------------------------------------------------------------------------------
# The family (models/__init__.py, kind 'symbolic').


def init(model: Model, rng: jax.Array, batch: dict) -> dict:
  return model.init(rng, with_start(model, jnp.asarray(batch['events'])))


def loss(model: Model, variables: dict, batch: dict, rng: jax.Array) -> tuple:
  """Mean NLL in nats per event over the events `event_mask` (and the row `mask`) counts:
  metrics 'nll', 'bits_per_event', 'accuracy' (of the most likely event) over 'weight' events."""
  del rng
  events = batch['events']
  mask = batch['event_mask']
  if 'mask' in batch:
    mask = mask & batch['mask'][:, None]
  out = model.apply(variables, with_start(model, events))
  w = mask.astype(jnp.float32)
  count = w.sum()
  mean = lambda a: (a * w).sum() / jnp.maximum(count, 1.)
  nll_ = mean(sampling.softmax_nll(out, events))
  accuracy = mean((jnp.argmax(out, -1) == events).astype(jnp.float32))
  return nll_, {'nll': nll_, 'bits_per_event': nll_ / np.log(2.), 'accuracy': accuracy,
                'weight': count}, {}


def render(model: Model, events, num_samples: int) -> np.ndarray:
  """Each stream's events (a sequence of [N_i], or [B, N]) -> mono float audio
  [B, num_samples] at model.sample_rate, through the embedded corpus's piano (data/synth.py)."""
  return np.stack([synth.render(midi_events.decode(e), model.sample_rate, num_samples).mean(1)
                   for e in events])


def compose(model: Model, variables: dict, rng: jax.Array, seconds: float, *, batch: int = 1,
            primer: np.ndarray | None = None, temperature: float = 1.0,
            first_stream: int = 0) -> list[np.ndarray]:
  """Each stream's new events [N_i] after the `primer` [B, P] (if given), up to the first whose
  time shifts reach `seconds` past the primer's end (or as many as `max_length` leaves room
  for): a stream's events do not depend on the other streams."""
  plen = 0 if primer is None else np.shape(primer)[1]
  if plen >= model.max_length - 1:
    raise ValueError(f'{plen} primer events leave no room: model.max_length={model.max_length}')
  events = _draw(model, variables, rng, batch, primer, temperature, first_stream,
                 model.max_length - 1 - plen, seconds)
  reached = midi_events.elapsed_steps(events) >= seconds * midi_events.STEPS_PER_SECOND
  ends = np.where(reached.any(1), reached.argmax(1) + 1, events.shape[1])
  return [e[:n] for e, n in zip(events, ends)]


def generate(model: Model, variables: dict, rng: jax.Array, num_samples: int, *, batch: int = 1,
             prompt=None, cond=None, temperature: float = 1.0, chunk_samples: int = 16000,
             first_stream: int = 0, keep: dict | None = None):
  """Audio of events drawn from the start token (`compose` for num_samples / sample_rate
  seconds), rendered with the corpus's piano; `keep` receives them as keep['events'] (a list
  of [N_i] arrays), for MIDI files (data/midi_events.decode, data/midi.write_midi)."""
  del cond
  if prompt is not None:
    raise ValueError('the Music Transformer models MIDI events, not audio: it cannot continue '
                     'an audio prompt (transcribe it and give the events as a primer to '
                     '`compose`)')
  kept = compose(model, variables, rng, num_samples / model.sample_rate, batch=batch,
                 temperature=temperature, first_stream=first_stream)
  if keep is not None:
    keep['events'] = kept
  audio = render(model, kept, num_samples)
  for s in range(0, num_samples, chunk_samples):
    yield audio[:, s:s + chunk_samples]
