"""The Music Transformer (models/music_transformer.py): the cached step equals the parallel pass,
causality, the NLL of every event, and the sampler's draws, primer and per-stream keys."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import midi_events
from models import music_transformer as mt

TINY = dict(max_length=40, max_distance=12, num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64)


@pytest.fixture(scope='module')
def tiny():
  m = mt.Model(**TINY)
  v = nn.unbox(m.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  events = jax.random.randint(jax.random.key(1), (2, 30), 0, m.vocab_size)
  return m, v, events


def test_the_cached_step_equals_the_parallel_pass(tiny):
  m, v, events = tiny
  tokens = mt.with_start(m, events)  # 30 positions, distances past max_distance = 12
  parallel = m.apply(v, tokens)
  assert parallel.shape == (2, 30, midi_events.VOCAB_SIZE) == (2, 30, 388)
  p = mt.unboxed_params(m, v)
  step = jax.jit(lambda c, x: mt.step(m, p, c, x))
  cache, rows = mt.init_cache(m, 2), []
  for t in range(30):
    out, cache = step(cache, tokens[:, t])
    rows.append(out)
  np.testing.assert_allclose(jnp.stack(rows, 1), parallel, rtol=1e-4, atol=1e-4)


def test_causal_and_every_event_scored(tiny):
  m, v, events = tiny
  tokens = mt.with_start(m, events)
  changed = tokens.at[:, 20].set((tokens[:, 20] + 1) % m.vocab_size)
  a, b = m.apply(v, tokens), m.apply(v, changed)
  np.testing.assert_allclose(a[:, :20], b[:, :20], rtol=1e-6)
  assert not np.allclose(a[:, 20:], b[:, 20:])
  nll = mt.nll(m, v, events)
  assert nll.shape == (2, 30)
  manual = -jax.nn.log_softmax(a[1, 0])[events[1, 0]]  # the first event given the start token
  np.testing.assert_allclose(nll[1, 0], manual, rtol=1e-5)
  assert abs(float(nll.mean()) - np.log(388)) < 1.5  # near uniform at init


def test_sampling_primer_and_streams(tiny):
  m, v, events = tiny
  primer = np.asarray(events[:, :10])
  greedy = mt.sample_events(m, v, jax.random.key(5), 8, primer=primer, temperature=0.)
  assert greedy.shape == (2, 8) and greedy.dtype == np.int32
  logits = m.apply(v, mt.with_start(m, jnp.concatenate([primer, greedy], 1)))
  np.testing.assert_array_equal(greedy, np.argmax(logits[:, 10:], -1))
  drawn = mt.sample_events(m, v, jax.random.key(5), 12, batch=2)
  assert drawn.min() >= 0 and drawn.max() < m.vocab_size
  alone = mt.sample_events(m, v, jax.random.key(5), 12, batch=1, first_stream=1)
  np.testing.assert_array_equal(alone[0], drawn[1])  # stream 1 draws by its number
  assert not np.array_equal(drawn, mt.sample_events(m, v, jax.random.key(6), 12, batch=2))
  with pytest.raises(ValueError, match='10 primer and 31 new events need 41 positions; '
                                       r'model\.max_length=40'):
    mt.sample_events(m, v, jax.random.key(5), 31, primer=primer)
  with pytest.raises(ValueError, match=r'primer events .*expected 0\.\.387'):
    mt.sample_events(m, v, jax.random.key(5), 2, primer=np.array([[388]]))
