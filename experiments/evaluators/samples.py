"""Audio clips from the family's `generate`, for TensorBoard (audio and spectrogram).

    config.evals.sample = dict(type='samples', every_steps=5000, seconds=2.0, temperature=1.0,
                               split='validation')

One stream of `seconds` of audio, drawn with fold_in(key(config.seed + 1), 0); a conditioned
model is conditioned on the first segment of `split` (its `Model.conditions` keys), which every
process reads for itself. Every process takes part in gathering the parameters; process 0
samples.
"""

import jax
import ml_collections
import numpy as np

from data import pipeline
from data import specs
from experiments import metrics as metrics_lib
from experiments import sharding
from experiments import state as state_lib


class Evaluator:
  """`{'audio': metrics.Audio}` of one sampled clip."""

  def __init__(self, context, seconds: float = 2.0, temperature: float = 1.0,
               split: str = 'validation'):
    self.context, self.seconds, self.temperature, self.split = context, seconds, temperature, split
    self.rate = specs.sample_rate(context.config.input)
    self._cond = None

  def _conditioning(self) -> dict:
    """The first segment's conditioning keys, read once."""
    keys = tuple(self.context.model.conditions)
    if not keys:
      return {}
    if self._cond is not None:
      return self._cond
    c = ml_collections.ConfigDict(self.context.config.input.to_dict())
    c.update(split=self.split, batch_size=jax.process_count(), crop_samples=None, shuffle=False,
             num_epochs=1, drop_remainder=False, worker_count=0)
    batch = next(pipeline.make_batches(c, shard_index=0, shard_count=1))  # the first segment
    self._cond = {k: np.asarray(batch[k])[:1] for k in keys}
    return self._cond

  def run(self, state: dict) -> dict:
    c = self.context
    if jax.process_index() != 0:
      sharding.to_host(state_lib.variables(state))  # a collective: every process joins
      return {}
    cond = self._conditioning()
    variables = sharding.to_host(state_lib.variables(state))
    n = int(self.seconds * self.rate)
    rng = jax.random.fold_in(jax.random.key(c.config.seed + 1), 0)
    wave = np.concatenate(list(c.family.generate(
        c.model, variables, rng, n, batch=1, cond=cond, temperature=self.temperature)), axis=1)
    return {'audio': metrics_lib.Audio(wave[0], self.rate)}
