"""The input pipeline of models over performance events: the MIDI dataset -> grain -> windows of
events -> per-process batches -> global jax.Arrays.

    source = the MIDI dataset's split (data/maestro_midi.py; prepared on first use)
    grain.DataLoader: IndexSampler(shuffle(seed), epochs) -> this process's rows of each
                      global batch (data/pipeline.GlobalBatchSlice)
                      -> per piece: augment (optional) -> encode -> a random window -> batch

A batch holds `events` [B, L] int32 (L = `config.window`) and `event_mask` [B, L] bool, False
past the end of a piece shorter than the window (those positions are zeros and do not count),
besides `index` (the piece's record) and `start` (the window's first event in the piece).
With `config.augment`, each piece is transposed and time-stretched by a draw from the Music
Transformer's sets (data/midi_events.py) before it is encoded. The augmentation and the
window's start are drawn from the random generator grain seeds per record from the sampler's
seed and the record's global position, so batches depend only on (seed, worker_count, step),
not on the number of processes, and a restored iterator continues exactly (as
data/pipeline.py; its `Batches` carries the checkpoint protocol).
"""

from absl import logging
import grain
import jax
import ml_collections
import numpy as np

from data import maestro_midi
from data import midi_events
from data import pipeline


def load_source(config: ml_collections.ConfigDict):
  """The MIDI dataset's split `config.split` (`config`: data/specs.events_input_config())."""
  sources = maestro_midi.prepare(config.manual_dir, config.data_dir).as_data_source()
  if config.split not in sources:
    raise ValueError(f'input.split={config.split!r}: expected one of {", ".join(sources)}')
  return sources[config.split]


class _Window(grain.transforms.RandomMap):
  """A piece's notes -> (augmented) events -> `window` of them from a random start."""

  def __init__(self, window: int, augment: bool):
    self._window, self._augment = window, augment

  def random_map(self, ex, rng: np.random.Generator):
    notes = maestro_midi.notes_of(ex)
    if self._augment:
      notes = midi_events.random_augment(notes, rng)
    events = midi_events.encode(notes)
    start = int(rng.integers(0, max(len(events) - self._window, 0) + 1))
    part = events[start:start + self._window]
    pad = self._window - len(part)
    return {'events': np.pad(part, (0, pad)).astype(np.int32),
            'event_mask': np.arange(self._window) < len(part),
            'index': np.int32(ex['index']), 'start': np.int32(start)}


def make_loader(config: ml_collections.ConfigDict, source, per_process_batch: int,
                shard_index: int, shard_count: int) -> grain.DataLoader:
  """The grain DataLoader of one process's shard (host numpy batches)."""
  if config.window < 1:
    raise ValueError(f'input.window={config.window}: expected a positive number of events')
  order = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=grain.sharding.NoSharding(),
      shuffle=config.shuffle, num_epochs=config.num_epochs, seed=config.seed)
  sampler = pipeline.GlobalBatchSlice(order, shard_index, shard_count, per_process_batch,
                                      config.drop_remainder)
  return grain.DataLoader(
      data_source=pipeline.WithIndex(source), sampler=sampler,
      shard_options=grain.sharding.NoSharding(),
      operations=[_Window(config.window, config.augment),
                  grain.transforms.Batch(per_process_batch, drop_remainder=config.drop_remainder)],
      worker_count=config.worker_count, worker_buffer_size=config.worker_buffer_size)


def make_batches(config: ml_collections.ConfigDict,
                 sharding: jax.sharding.NamedSharding | None = None,
                 shard_index: int | None = None,
                 shard_count: int | None = None) -> pipeline.Batches:
  """Global batches of `config` (data/specs.events_input_config()) laid out with `sharding`,
  or host numpy batches of this process when it is None."""
  source = load_source(config)
  per_process = pipeline.batch_shards(config.batch_size, sharding)
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  loader = make_loader(config, source, per_process, shard_index, shard_count)
  logging.info('Input: maestro_midi %s, %d pieces, %d per process-batch, shard %d of %d',
               config.split, len(source), per_process, shard_index, shard_count)
  return pipeline.Batches(loader, sharding, per_process, pad=not config.drop_remainder)


def _pieces(config: ml_collections.ConfigDict, split: str) -> list[np.ndarray]:
  """The events of every piece of `split`, in order, unaugmented."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.split = split
  source = load_source(c)
  return [midi_events.encode(maestro_midi.notes_of(source[i])) for i in range(len(source))]


def eval_batches(config: ml_collections.ConfigDict, split: str, batch_size: int,
                 sharding: jax.sharding.NamedSharding, max_batches: int | None = None):
  """Every piece of `split` once, in order, cut into consecutive windows of `config.window`
  events (a piece's last window holds the rest, masked by `event_mask`), each scored from the
  start token; global batches (or the first `max_batches`) with 'mask' False on padding rows.

  Every process reads the split and builds its own rows of each global batch, so the windows
  do not depend on the process count."""
  window = config.window
  pieces = _pieces(config, split)
  windows = [(i, s) for i, e in enumerate(pieces) for s in range(0, max(len(e), 1), window)]
  per_process = pipeline.batch_shards(batch_size, sharding)
  n = -(-len(windows) // batch_size)
  if max_batches is not None:
    n = min(n, max_batches)
  first = jax.process_index() * per_process
  for b in range(n):
    rows = windows[b * batch_size + first:b * batch_size + first + per_process]
    events = np.zeros((per_process, window), np.int32)
    lengths = np.zeros((per_process, 1), np.int64)
    for r, (i, s) in enumerate(rows):
      part = pieces[i][s:s + window]
      events[r, :len(part)], lengths[r] = part, len(part)
    host = {'events': events, 'event_mask': np.arange(window) < lengths,
            'mask': np.arange(per_process) < len(rows)}
    yield {k: jax.make_array_from_process_local_data(sharding, v, (batch_size,) + v.shape[1:])
           for k, v in host.items()}


def marginal_entropy_bits(config: ml_collections.ConfigDict, split: str) -> float:
  """Entropy of the event histogram of `split` in bits: the NLL per event of a model that
  ignores context."""
  counts = np.bincount(np.concatenate(_pieces(config, split) + [np.zeros(0, np.int64)]),
                       minlength=midi_events.VOCAB_SIZE)
  p = counts[counts > 0] / max(counts.sum(), 1)
  return float(-(p * np.log2(p)).sum())
