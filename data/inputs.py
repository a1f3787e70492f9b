"""An experiment's batches by the kind of its `config.input` (data/specs.py): audio and frame
features (data/pipeline.py) or performance events (data/events_pipeline.py, `specs.is_events`).
The trainer and the likelihood evaluator read through here, so that one loop serves both."""

import jax
import ml_collections

from data import events_pipeline
from data import pipeline
from data import specs


def make_batches(config: ml_collections.ConfigDict,
                 sharding: jax.sharding.NamedSharding | None = None,
                 shard_index: int | None = None, shard_count: int | None = None):
  """Global training batches of `config` (a checkpointable `pipeline.Batches`)."""
  module = events_pipeline if specs.is_events(config) else pipeline
  return module.make_batches(config, sharding, shard_index, shard_count)


def eval_batches(input_config: ml_collections.ConfigDict, split: str, batch_size: int,
                 crop_samples: int | None, sharding: jax.sharding.NamedSharding,
                 max_batches: int | None = None):
  """Every example of `split` once, in order, as global batches with 'mask': the audio's
  segments (or a seeded crop of each), or the events' consecutive windows (`crop_samples` must
  be None)."""
  if not specs.is_events(input_config):
    return pipeline.eval_batches(input_config, split, batch_size, crop_samples, sharding,
                                 max_batches)
  if crop_samples is not None:
    raise ValueError(f'crop_samples={crop_samples}: an events input is cut into windows of '
                     f'input.window={input_config.window} events, not crops of audio')
  return events_pipeline.eval_batches(input_config, split, batch_size, sharding, max_batches)
