"""The input pipeline: Maestro segments -> grain -> per-process batches -> global jax.Arrays.

    source = tfds data source of one split (the dataset is prepared on first use)
    grain.DataLoader: IndexSampler(shuffle(seed), epochs) -> this process's rows of each
                      global batch (GlobalBatchSlice)
                      -> random crop (seeded per record by grain) -> encode -> batch
    Batches: each host batch -> jax.make_array_from_process_local_data(batch sharding)

A batch is a dict of arrays with a leading batch axis, its keys and shapes as data/specs.py
lists them.

Crops of T = `crop_samples` start anywhere in a segment, or on frame boundaries (multiples of the
hop) when frame features are asked for, so that frame f of the crop covers audio samples
[f hop, (f + 1) hop). grain seeds the crop of each record from the sampler's seed and the
record's position in the global order, so the batches depend only on (seed, worker_count,
step), and not on the number of processes that read them: the same seed gives the same
batches, and a restored iterator continues with exactly the batches the uninterrupted one would
have produced. (grain's workers interleave their records, so changing
`worker_count` changes the order; keep it fixed across a resume.) Its state goes into an Orbax
checkpoint as `grain.checkpoint.CheckpointSave(batches)` (one small JSON per process).
"""

import functools
import math
import sys

from absl import flags
from absl import logging
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data import audio as audio_lib
from data import instruments
from data import maestro
from data import spectral
from data import specs

def load_source(config: ml_collections.ConfigDict):
  """(data source of `config.split`, the prepared Maestro builder: the multi-instrument one,
  data/instruments.py, with `config.instruments`)."""
  prepare = instruments.prepare if config.get('instruments') else maestro.prepare
  builder = prepare(config.dataset, manual_dir=config.manual_dir, data_dir=config.data_dir,
                    num_workers=config.prepare_workers)
  sources = builder.as_data_source()
  if config.split not in sources:
    raise ValueError(f'input.split={config.split!r}: expected one of {", ".join(sources)}')
  return sources[config.split], builder


class WithIndex:
  """A random-access source whose records carry their own index."""

  def __init__(self, source):
    self._source = source

  def __len__(self):
    return len(self._source)

  def __repr__(self):
    # grain matches a checkpoint with its source by repr; the class's earlier name keeps the
    # runs checkpointed under it restorable.
    return f'_WithIndex({self._source!r})'

  def __getitem__(self, i):
    record = self._source[i]
    record['index'] = i
    return record


class _Crop(grain.transforms.RandomMap):
  """Keeps the wanted keys and crops `crop` samples (frame-aligned with `hop`) at random.

  For the 'mel' feature it keeps `pcm`, the int16 samples the crop's mel frames read: frame f
  is centred on crop sample f hop, so the crop with n_fft // 2 samples of the segment around
  it (zeros beyond the segment's ends); `Batches` turns it into `mel` on the device.
  """

  def __init__(self, crop: int | None, hop: int, frame_keys: tuple[str, ...],
               mel_n_fft: int = 0):
    self._crop, self._hop, self._frame_keys = crop, hop, frame_keys
    self._n_fft = mel_n_fft

  def random_map(self, ex, rng: np.random.Generator):
    n = len(ex['audio'])
    crop = self._crop or n
    step = self._hop if self._frame_keys else 1
    start = int(rng.integers(0, (n - crop) // step + 1)) * step
    out = {'audio': ex['audio'][start:start + crop],
           'index': np.int32(ex['index']),
           'start_sample': np.int32(ex['start_sample'] + start)}
    if 'instrument' in ex:
      out['instrument'] = np.int32(ex['instrument'])
    for k in self._frame_keys:
      if k != 'mel':
        out[k] = ex[k][start // self._hop:(start + crop) // self._hop]
    if 'mel' in self._frame_keys:
      frames = -(-crop // self._hop)
      lo = start - self._n_fft // 2
      hi = lo + (frames - 1) * self._hop + self._n_fft
      pcm = ex['audio'][max(lo, 0):min(hi, n)]
      out['pcm'] = np.pad(pcm, (max(0, -lo), max(0, hi - n)))
    return out


class _Encode(grain.transforms.Map):
  """int16 samples -> codes or floats (data/audio.py conventions)."""

  def __init__(self, encoding: str, bits: int):
    self._encoding, self._bits = encoding, bits

  def map(self, ex):
    ex['audio'] = audio_lib.encode(audio_lib.from_int16(ex['audio']), self._encoding,
                                   self._bits)
    return ex


def _check(config, builder, per_process_batch: int) -> tuple[int, tuple[str, ...]]:
  """Validates the input config against the dataset; returns (hop, frame feature keys)."""
  meta = builder.builder_config
  specs.check(config)
  keys = tuple(config.frame_features)
  crop = config.crop_samples
  if crop is not None:
    if not 0 < crop <= meta.segment_samples:
      raise ValueError(f'input.crop_samples={crop}: expected 1..{meta.segment_samples}, the '
                       f'segment length of maestro/{meta.name}')
    if keys and crop % meta.hop_length:
      raise ValueError(f'input.crop_samples={crop}: must be a multiple of the hop length '
                       f'{meta.hop_length} when frame features are read')
  if per_process_batch <= 0:
    raise ValueError(f'input.batch_size={config.batch_size}: expected a positive batch')
  return meta.hop_length, keys


class GlobalBatchSlice:
  """A grain sampler: process p's rows of each global batch of one global record order.

  `order` (a seeded IndexSampler over the whole split) fixes the records of global batch k as
  positions [k B, (k + 1) B), B = n x shard_count; process p reads positions
  [k B + p n, k B + (p + 1) n). Each record keeps the random generator of its global position
  (the crop's seed), so the global batches, crops included, are the same for any number of
  processes, and a run on 2 hosts sees the data a run on 1 host sees. With drop_remainder=False
  the last, partial global batch is split the same way (later processes may get fewer rows, or
  none).
  """

  def __init__(self, order, shard_index: int, shard_count: int, per_process_batch: int,
               drop_remainder: bool):
    self._order, self._p, self._n = order, shard_index, per_process_batch
    self._b = per_process_batch * shard_count
    total = len(order)
    if total == sys.maxsize:  # repeats forever
      self._len = total
    else:
      full, rest = divmod(total, self._b)
      extra = 0 if drop_remainder else min(self._n, max(0, rest - self._p * self._n))
      self._len = full * self._n + extra

  def __len__(self) -> int:
    return self._len

  def __repr__(self) -> str:
    return (f'GlobalBatchSlice({self._order!r}, shard_index={self._p}, '
            f'per_process_batch={self._n}, global_batch={self._b})')

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    if not 0 <= index < self._len:
      raise IndexError(f'index {index} outside [0, {self._len})')
    row = (index // self._n) * self._b + self._p * self._n + index % self._n
    meta = self._order[row]
    return grain.RecordMetadata(index=index, record_key=meta.record_key, rng=meta.rng)


def make_loader(config: ml_collections.ConfigDict, source, builder, per_process_batch: int,
                shard_index: int, shard_count: int) -> grain.DataLoader:
  """The grain DataLoader of one process's shard (host numpy batches)."""
  hop, keys = _check(config, builder, per_process_batch)
  if config.worker_count and not flags.FLAGS.is_parsed():
    # grain's worker processes read absl flags; outside an absl app (notebooks, tests) take the
    # defaults rather than fail.
    flags.FLAGS.mark_as_parsed()
  order = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=grain.sharding.NoSharding(),
      shuffle=config.shuffle, num_epochs=config.num_epochs, seed=config.seed)
  sampler = GlobalBatchSlice(order, shard_index, shard_count, per_process_batch,
                             config.drop_remainder)
  return grain.DataLoader(
      data_source=WithIndex(source), sampler=sampler, shard_options=grain.sharding.NoSharding(),
      operations=[_Crop(config.crop_samples, hop, keys, config.mel.n_fft),
                  _Encode(config.encoding, config.bits),
                  grain.transforms.Batch(per_process_batch, drop_remainder=config.drop_remainder)],
      worker_count=config.worker_count, worker_buffer_size=config.worker_buffer_size)


def batch_shards(global_batch: int, sharding: jax.sharding.NamedSharding | None,
                 key: str = 'input.batch_size') -> int:
  """Per-process batch size; raises ValueError naming `key` (the setting that gave
  `global_batch`) if processes or mesh axes do not divide it."""
  processes = jax.process_count()
  if global_batch < 1 or global_batch % processes:
    raise ValueError(f'{key}={global_batch}: expected a positive multiple of the {processes} '
                     'JAX processes')
  if sharding is not None and len(sharding.spec) and sharding.spec[0] is not None:
    axes = sharding.spec[0] if isinstance(sharding.spec[0], tuple) else (sharding.spec[0],)
    devices = math.prod(sharding.mesh.shape[a] for a in axes)
    if global_batch % devices:
      raise ValueError(f'{key}={global_batch} is not divisible by the {devices} devices of '
                       f'mesh axes {axes}')
  return global_batch // processes


def mel_features(audio, input_config: ml_collections.ConfigDict,
                 center: bool = True) -> jax.Array:
  """The 'mel' frame feature [..., F, n_mels] of float audio [..., T] (input_config.mel, the
  dataset's hop): with `center`, frame f is centred on sample f hop (zeros before the start),
  F = ceil(T / hop); without, `audio` is a crop's `pcm` window (see `_Crop`) and F counts
  the frames that fit in it."""
  kwargs = specs.mel_kwargs(input_config)
  mel = spectral.log_mel_spectrogram(audio, center=center, **kwargs)
  if center:
    mel = mel[..., :-(-audio.shape[-1] // kwargs['hop_length'])]
  return jnp.swapaxes(mel, -1, -2)


def pcm_mel(pcm: jax.Array, input_config: ml_collections.ConfigDict) -> jax.Array:
  """The 'mel' feature [B, F, n_mels] of crops' int16 `pcm` windows (see `_Crop`)."""
  return mel_features(pcm.astype(jnp.float32) / 32768., input_config, center=False)


class Batches:
  """Iterator of global batches; checkpointable with grain.checkpoint.CheckpointSave/Restore.

  The 'mel' feature is computed here, from the crops' int16 `pcm` windows, by a jitted
  function on the batch's devices (sharded as the batch): on an accelerator it costs the step
  almost nothing, where the host's cores feed every device of a process.
  """

  def __init__(self, loader: grain.DataLoader, sharding, per_process_batch: int, pad: bool,
               input_config: ml_collections.ConfigDict | None = None):
    self._iterator = iter(loader)
    self._sharding, self._batch, self._pad = sharding, per_process_batch, pad
    self._global = per_process_batch * jax.process_count()
    self._mel = None
    if input_config is not None and 'mel' in input_config.frame_features:
      mel = functools.partial(pcm_mel, input_config=input_config)
      self._mel = jax.jit(mel, out_shardings=sharding) if sharding is not None else jax.jit(mel)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = next(self._iterator)
    if self._pad:
      n = len(next(iter(batch.values())))
      batch = {k: np.concatenate([v, np.zeros((self._batch - n,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
      batch['mask'] = np.arange(self._batch) < n
    if self._sharding is not None:
      batch = {k: jax.make_array_from_process_local_data(self._sharding, v, (self._global,) +
                                                         v.shape[1:]) for k, v in batch.items()}
    if self._mel is not None:
      batch['mel'] = self._mel(batch.pop('pcm'))
      if self._sharding is None:
        batch['mel'] = np.asarray(batch['mel'])
    return batch

  # The grain/Orbax checkpoint protocol, delegated to the DataLoader iterator.
  def get_state(self) -> bytes:
    return self._iterator.get_state()

  def set_state(self, state: bytes) -> None:
    self._iterator.set_state(state)

  def start_prefetch(self) -> None:
    self._iterator.start_prefetch()


def make_batches(config: ml_collections.ConfigDict,
                 sharding: jax.sharding.NamedSharding | None = None,
                 shard_index: int | None = None, shard_count: int | None = None) -> Batches:
  """Global batches of `config` (see data/specs.py, `input_config`) laid out with `sharding`.

  Args:
    config: the input config (data/specs.py, `input_config`).
    sharding: the batch sharding (leading axis over the data mesh axes); None yields host
      numpy batches of this process.
    shard_index, shard_count: this process's data shard; default jax.process_index() and
      jax.process_count().

  Returns:
    a `Batches` iterator.
  """
  source, builder = load_source(config)
  per_process = batch_shards(config.batch_size, sharding)
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  loader = make_loader(config, source, builder, per_process, shard_index, shard_count)
  logging.info('Input: maestro/%s %s, %d records, %d per process-batch, shard %d of %d',
               builder.builder_config.name, config.split, len(source), per_process,
               shard_index, shard_count)
  return Batches(loader, sharding, per_process, pad=not config.drop_remainder,
                 input_config=config)



def eval_batches(input_config: ml_collections.ConfigDict, split: str, batch_size: int,
                 crop_samples: int | None, sharding: jax.sharding.NamedSharding,
                 max_batches: int | None = None):
  """Every segment of `split` once, in order (or its first `max_batches` global batches), as
  global batches with `mask` (False on padding rows).

  A process can have fewer rows of the last global batch than others, or none; the short ones
  pad with empty batches so that every process runs the same number of steps (a collective
  would otherwise hang).
  """
  c = ml_collections.ConfigDict(input_config.to_dict())
  c.update(split=split, batch_size=batch_size, crop_samples=crop_samples, shuffle=False,
           num_epochs=1, drop_remainder=False, worker_count=0)
  source, builder = load_source(c)
  per_process = batch_shards(batch_size, sharding)
  host = Batches(make_loader(c, source, builder, per_process, jax.process_index(),
                             jax.process_count()), None, per_process, pad=True, input_config=c)
  n = -(-len(source) // batch_size)  # global batches; a process's last ones may be empty
  if max_batches is not None:
    n = min(n, max_batches)
  template = None
  for _ in range(n):
    batch = next(host, None)
    if batch is None:  # this process's rows are done: an all-padding batch
      if template is None:  # it had none at all (a split smaller than one global batch)
        template = next(Batches(make_loader(c, source, builder, per_process, 0,
                                            jax.process_count()), None, per_process, True, c))
      batch = {k: np.zeros_like(v) for k, v in template.items()}
    template = template or batch
    yield {k: jax.make_array_from_process_local_data(
        sharding, v, (per_process * jax.process_count(),) + v.shape[1:])
           for k, v in batch.items()}
