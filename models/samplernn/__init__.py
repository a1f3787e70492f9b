"""SampleRNN (Mehri et al. 2017): tiers of recurrent networks at decreasing rates over a
sample-level MLP, with a cached sampler in which each tier steps at its own rate.

    frame tier 0 (frame F0 = 8)   every 8 samples: the previous 8 samples, scaled to [-2, 2] and
                                  projected, -> GRU/LSTM -> r0 = F0 / F1 learned projections
    frame tier 1 (frame F1 = 2)   every 2 samples: the previous 2 samples projected + tier 0's
                                  conditioning for this step -> GRU/LSTM -> F1 projections
    sample-level MLP              every sample: embeddings of the previous F1 codes, concatenated,
                                  projected + tier 1's conditioning for this sample -> ReLU
                                  layers -> a softmax over the codes

(`frame_sizes` (8, 2) is the paper's 3-tier music model; (16,) its 2-tier one.) Every tier's
recurrent state starts from a learned initial state. Codes: 8-bit linear (the paper's) or
mu-law, from config.input.

Training is truncated backpropagation through time, as the paper trains. A crop of C + N codes
(C = the top frame size) is the C codes of context, then N predicted codes cut into
subsequences of `tbptt_samples`; `loss` runs them in order with lax.scan, each from the
recurrent states the previous one ended with, the gradient stopped between them, and each
rematerialised in the backward pass (memory of one subsequence). A crop's first subsequence
starts from the learned initial states, with the crop's own first C codes as its context:
those C codes are not predicted, so a crop of T samples scores T - C. A crop whose N is not a
multiple of `tbptt_samples` is padded at the end with silence that is not scored (exact: the
model is causal), so whole evaluation segments of any length work.

`model.__call__` / `subsequence` are the parallel pass, `init_cache` / `step` the sampler
(models/samplernn/sampler.py); the tests prove they agree step by step.
"""

import jax
import jax.numpy as jnp

from models.layers import autoregressive
from models.layers import sampling
from models.samplernn.model import Model
from models.samplernn.model import initial_state
from models.samplernn.model import subsequence
from models.samplernn.model import unboxed_params
from models.samplernn.sampler import init_cache
from models.samplernn.sampler import sample_codes
from models.samplernn.sampler import step


def init(model: Model, rng: jax.Array, batch: dict) -> dict:
  """The variables of `model` from `rng`, on a dummy crop of the top frame's context + one
  frame (the parameters do not depend on the length)."""
  rows = jnp.shape(batch['audio'])[0]
  return model.init(rng, jnp.zeros((rows, model.context + model.frame_sizes[0]), jnp.int32))


def loss(model: Model, variables: dict, batch: dict, rng=None) -> tuple:
  """(mean NLL in nats per predicted sample, metrics, {}) by truncated BPTT (module docstring);
  metrics 'nll', 'bits_per_sample', 'weight' (predicted samples, over rows batch['mask']
  keeps) as every code model's."""
  del rng  # deterministic
  codes = jnp.asarray(batch['audio'], jnp.int32)
  b, t = codes.shape
  c, s = model.context, model.tbptt_samples
  n = t - c
  if n < 1:
    raise ValueError(f'crops of {t} samples: SampleRNN predicts after {c} samples of context; '
                     f'expected more (config.input.crop_samples)')
  pieces = -(-n // s)
  padded = jnp.pad(codes, ((0, 0), (0, pieces * s - n)), constant_values=model.num_classes // 2)
  # Subsequence j: codes [j s, j s + C + s) (its context then its s predicted codes).
  windows = jnp.stack([padded[:, j * s:j * s + c + s] for j in range(pieces)])  # [J, B, C + s]
  p = unboxed_params(model, variables)

  @jax.checkpoint
  def body(states, window):
    logits, new = subsequence(model, p, states, window)
    per_sample = sampling.softmax_nll(logits, window[:, c:])  # [B, s]
    return jax.lax.stop_gradient(new), per_sample

  _, per_sample = jax.lax.scan(body, initial_state(model, p, b), windows)
  per_sample = jnp.swapaxes(per_sample, 0, 1).reshape(b, pieces * s)  # [B, J s]
  scored = (jnp.arange(pieces * s) < n)[None] & batch.get(
      'mask', jnp.ones((b,), bool))[:, None]
  count = jnp.sum(scored)
  mean = jnp.sum(jnp.where(scored, per_sample, 0.)) / jnp.maximum(count, 1)
  return mean, {'nll': mean, 'bits_per_sample': mean / autoregressive.LOG2, 'weight': count}, {}


def generate(model: Model, variables: dict, rng, num_samples: int, **kwargs):
  """Float audio chunks [B, <= chunk_samples] (the contract's `generate`): `sample_codes`
  decoded, with a float prompt (layers/autoregressive.generate)."""
  return autoregressive.generate(sample_codes, model, variables, rng, num_samples, **kwargs)


__all__ = ['Model', 'init', 'loss', 'generate', 'init_cache', 'step', 'sample_codes',
           'subsequence', 'initial_state', 'unboxed_params']
