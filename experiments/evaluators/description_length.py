"""The description length of a split under a VQ-VAE hierarchy, level by level.

    config.evals.description_length = dict(type='description_length', every_steps=0,
                                           split='validation', batches=8, batch_size=8,
                                           crop_samples=None)

For a prior's run (models/vqvae_prior; its model state holds every level): on the same batches
(as the likelihood evaluator draws them), each level's loss metrics, through the frozen levels
below it, and the prior's. The hierarchy is a lossless code of the audio codes: the top codes
under the prior, then each level's input under its decoder given its codes. Its length per
audio sample is the sum of the prior's bits per top code over the top level's audio hop and
each level's bits per input position over that position's audio hop, to set beside a flat
model's bits per sample. Reported:

  level<i>_bits_per_code          level i's reconstruction NLL per input position, in bits
                                  (per audio sample at level 1, per level i - 1 code above)
  level<i>_bits_per_audio_sample  that over the audio samples one input position spans
  level<i>_perplexity, level<i>_dead_fraction, level<i>_commitment
  prior_bits_per_code, prior_bits_per_audio_sample
  total_bits_per_audio_sample     the sum of the bits per audio sample above
  prior_receptive_field_seconds   the audio the prior's context spans
  samples                         audio samples scored (the prior's positions x its hop)
"""

import flax.linen as nn
import jax
import numpy as np

from data import pipeline
from experiments import state as state_lib
from models.vqvae import model as level_lib

LEVEL_KEYS = ('bits_per_sample', 'bits_per_audio_sample', 'perplexity', 'dead_fraction',
              'commitment')


class Evaluator:
  """The description length of a split under the hierarchy of a prior's run."""

  def __init__(self, context, split: str = 'validation', batch_size: int = 8,
               crop_samples: int | None = None, batches: int | None = None):
    c = context
    if not c.config.model_name == 'vqvae_prior':
      raise ValueError(f'config.model_name={c.config.model_name!r}: the description_length '
                       'evaluator scores a VQ-VAE prior\'s run (its state holds every level)')
    self.context, self.split, self.batch_size = context, split, batch_size
    self.crop_samples, self.batches = crop_samples, batches
    levels = level_lib.level_models(c.model)
    seed = c.config.seed

    def eval_step(state, batch, i):
      rng = jax.random.fold_in(jax.random.key(seed), i)
      variables = state_lib.variables(state)
      frozen = variables['levels']
      out = {}
      with nn.logical_axis_rules(c.rules):
        _, out['prior'], _ = c.family.loss(c.model, variables, batch, rng)
        for n, level in enumerate(levels, start=1):
          v = {**frozen[f'level{n}'], 'levels': {f'level{j}': frozen[f'level{j}']
                                                 for j in range(1, n)}}
          _, out[f'level{n}'], _ = level_lib.loss(level, v, batch, rng)
      return out

    self._step = jax.jit(eval_step, in_shardings=(
        {k: v for k, v in c.state_shardings.items() if k in ('params', 'model_state')},
        c.batch_sharding, None))

  def run(self, state: dict) -> dict:
    c = self.context
    state = {k: state[k] for k in ('params', 'model_state') if k in state}
    batches = pipeline.eval_batches(c.config.input, self.split, self.batch_size,
                                    self.crop_samples, c.batch_sharding, self.batches)
    with jax.set_mesh(c.mesh):
      outs = jax.device_get([self._step(state, b, np.int32(i)) for i, b in enumerate(batches)])
    mean = {}
    for group in outs[0]:
      weights = np.array([float(o[group]['weight']) for o in outs])
      mean[group] = {k: float(np.sum([float(o[group][k]) for o in outs] * weights) /
                              max(weights.sum(), 1.)) for k in outs[0][group] if k != 'weight'}
      mean[group]['weight'] = float(weights.sum())
    result = {}
    for n in range(1, len(outs[0])):
      m = mean[f'level{n}']
      result.update({f'level{n}_{k.replace("bits_per_sample", "bits_per_code")}': m[k]
                     for k in LEVEL_KEYS})
    result['prior_bits_per_code'] = mean['prior']['bits_per_sample']
    result['prior_bits_per_audio_sample'] = mean['prior']['bits_per_audio_sample']
    result['total_bits_per_audio_sample'] = result['prior_bits_per_audio_sample'] + sum(
        result[f'level{n}_bits_per_audio_sample'] for n in range(1, len(outs[0])))
    result['prior_receptive_field_seconds'] = c.model.receptive_field_seconds
    result['samples'] = int(mean['prior']['weight'] * c.model.audio_hop)
    return result
