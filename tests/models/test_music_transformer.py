"""The Music Transformer (models/music_transformer.py): the cached step equals the parallel pass,
causality, the NLL of every event, the sampler's draws, primer and per-stream keys; as a family
(kind 'symbolic'): the masked loss, the sharded loss, a falling loss on the embedded corpus,
rendered samples with their MIDI, and exact resume after SIGKILL."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import midi
from data import midi_events
from experiments import sample as sample_lib
from models import music_transformer as mt
from tests.conftest import assert_sharded_loss_equals_one_device
from tests.conftest import config_path
from tests.conftest import kill_and_resume
from tests.conftest import metric_over_steps
from tests.conftest import tiny_music_transformer
from tests.conftest import train_step_of

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


def test_the_loss_counts_the_masked_events_only(tiny):
  m, v, events = tiny
  mask = np.arange(30) < np.array([[30], [17]])
  loss, metrics, state = mt.loss(m, v, {'events': events, 'event_mask': mask}, None)
  nll = np.asarray(mt.nll(m, v, events))
  assert state == {} and float(metrics['weight']) == 47
  np.testing.assert_allclose(loss, nll[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics['bits_per_event'], loss / np.log(2), rtol=1e-6)
  # Events past the mask (and rows the batch's 'mask' drops) change nothing.
  other = events.at[1, 17:].set(0)
  again, _, _ = mt.loss(m, v, {'events': other, 'event_mask': mask}, None)
  np.testing.assert_allclose(again, loss, rtol=1e-6)
  row0, _, _ = mt.loss(m, v, {'events': events, 'event_mask': mask,
                              'mask': np.array([True, False])}, None)
  np.testing.assert_allclose(row0, nll[0].mean(), rtol=1e-5)


def test_generate_renders_each_streams_own_events(tiny):
  m, v, _ = tiny
  rate = m.sample_rate
  keep, one = {}, {}
  audio = np.concatenate(list(mt.generate(m, v, jax.random.key(4), rate // 4, batch=2,
                                          chunk_samples=1000, keep=keep)), axis=1)
  assert audio.shape == (2, rate // 4) and np.abs(audio).max() <= 1
  second = np.concatenate(list(mt.generate(m, v, jax.random.key(4), rate // 4, first_stream=1,
                                           keep=one)), axis=1)
  np.testing.assert_array_equal(one['events'][0], keep['events'][1])
  np.testing.assert_allclose(second[0], audio[1], atol=1e-6)
  for e in keep['events']:  # up to the first event that reaches 0.25 s, or max_length - 1
    steps = midi_events.elapsed_steps(e)
    assert len(e) == m.max_length - 1 or (steps[-1] >= 25 and (len(e) == 1 or steps[-2] < 25))
  np.testing.assert_allclose(mt.render(m, keep['events'][0][None], rate // 4)[0], audio[0],
                             atol=1e-6)
  with pytest.raises(ValueError, match='cannot continue an audio prompt'):
    next(mt.generate(m, v, jax.random.key(4), 100, prompt=np.zeros((1, 10))))


def test_sharded_loss_and_gradients_equal_one_device():
  assert_sharded_loss_equals_one_device(lambda mesh: tiny_music_transformer(mesh=mesh))


def test_loss_falls_on_the_embedded_corpus():
  c = tiny_music_transformer(**{'optim.learning_rate': 3e-3, 'total_steps': 30})
  nll = metric_over_steps(c, *train_step_of(c), 'nll', 30)
  assert np.mean(nll[-5:]) < np.mean(nll[:5]) - 1.0, nll


@pytest.mark.slow
def test_killed_run_resumes_bit_identically_and_samples_with_midi(tmp_path):
  flags_ = ['--config.total_steps=8', '--config.checkpoint.every_steps=2',
            '--config.model.num_layers=2', '--config.model.embed_dim=32',
            '--config.model.mlp_dim=64', '--config.model.max_length=128',
            '--config.model.max_distance=32', '--config.input.window=64',
            '--config.input.batch_size=8', '--config.evals.validation.every_steps=8',
            '--config.evals.sample.every_steps=0', '--config.checkpoint.async_save=False']
  straight, killed, out = kill_and_resume(tmp_path, config_path('music_transformer') +
                                          ':runlocal', flags_, total=8)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(killed)):
    np.testing.assert_array_equal(a, b)
  assert 'validation: accuracy=' in out and 'bits_per_event=' in out
  paths = sample_lib.sample(str(tmp_path / 'killed'), 2, 0.5, str(tmp_path / 'wav'))
  for path in paths:
    notes = midi.load_notes(path[:-len('.wav')] + '.mid')
    assert len(notes) == 0 or notes.onsets.max() < 0.5 + 1e-6
    assert path.endswith('.wav') and (tmp_path / 'wav' / path.rsplit('/', 1)[1]).exists()
