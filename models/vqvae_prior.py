"""The top prior of a VQ-VAE hierarchy, and sampling the whole hierarchy to audio.

The prior is an autoregressive family over the top level's codes: a Sparse Transformer or a
WaveNet (`prior`, with its Model fields `prior_model`), built with the top codebook as its
vocabulary and trained by its own family's `loss` on the codes that the frozen levels
(models/vqvae) give each batch of audio. Nothing of those families is copied: this module
only encodes the audio, and renders the prior's draws through the levels' decoders
(models/vqvae/hierarchy.py).

The variables: 'params' {'net': the prior's parameters}; the model state 'levels'
({'level1': {'params', 'vq'}, ...}: every level, loaded from the top level's workdir by
experiments/train_vqvae.py), so that sampling needs only the prior's workdir.

The family contract (models/__init__.py): `init`, `loss` (the prior's NLL in nats per top code;
'bits_per_sample' per top code, 'bits_per_audio_sample' that over the top level's audio hop)
and `generate`: the top prior's codes, then each level's decoder, top down, to audio, for any
length in bounded memory, with a temperature per stage (a float for all, or a sequence, the
prior's first, then the levels' from the top). With a prompt it continues: the prompt is
encoded at every level, the prior continues its top codes, and each decoder continues its
level's codes under them.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import models
from models.layers import autoregressive
from models.vqvae import hierarchy
from models.vqvae import model as level_lib
from models.vqvae.model import codes_below

PRIORS = ('sparse_transformer', 'wavenet')


class Model(autoregressive.Unconditional, nn.Module):
  """The top prior; `Model(**config.model)`."""
  num_classes: int = 256  # the audio codes (derived from config.input)
  encoding: str = 'mu_law'  # (derived)
  sample_rate: int = 16000  # (derived)
  prior: str = 'sparse_transformer'  # the family of the prior over the top codes
  prior_model: tuple = ()  # its Model fields, as (name, value) pairs
  levels: tuple = ()  # every level's Model fields, level 1 first (derived from config.levels)

  def __post_init__(self):
    if self.prior not in PRIORS:
      raise ValueError(f'model.prior={self.prior!r}: expected one of {", ".join(PRIORS)}')
    if not self.levels:
      raise ValueError('a prior needs the levels it models: set config.below_workdir to the top '
                       'level\'s workdir (experiments/train_vqvae.py loads them)')
    super().__post_init__()

  @property
  def audio_hop(self) -> int:
    return level_lib.level_models(self)[-1].audio_hop

  @property
  def receptive_field_seconds(self) -> float:
    """The audio the prior's receptive field spans, in seconds."""
    return net_of(self).receptive_field * self.audio_hop / self.sample_rate

  def setup(self):
    self.net = net_of(self)

  def __call__(self, codes: jax.Array) -> jax.Array:
    return self.net(codes)


def net_of(model: Model) -> nn.Module:
  """The prior as a Model of its own family, over the top level's codebook."""
  top = dict(model.levels[-1])['codebook_size']
  return models.family(model.prior).Model(**{**dict(model.prior_model), 'num_classes': top,
                                             'encoding': 'linear'})


def net_variables(variables: dict) -> dict:
  return {'params': variables['params']['net']}


def init(model: Model, rng: jax.Array, batch: dict) -> dict:
  """{'params': {'net': ...}, 'levels': ...} on a batch of zeros shaped as training batches."""
  audio = jnp.asarray(batch['audio'])
  if audio.shape[1] % model.audio_hop:
    raise ValueError(f'{audio.shape[1]} audio samples: expected a multiple of the top level\'s '
                     f'hop {model.audio_hop} (config.input.crop_samples)')
  codes = jnp.zeros((audio.shape[0], audio.shape[1] // model.audio_hop), jnp.int32)
  return {**model.init(rng, codes), 'levels': level_lib.init_levels(model, rng, audio)}


def loss(model: Model, variables: dict, batch: dict, rng=None) -> tuple:
  """The prior family's loss on the batch's top codes (module docstring)."""
  top = codes_below(model, variables, jnp.asarray(batch['audio']))
  inner = {'audio': top, **({'mask': batch['mask']} if 'mask' in batch else {})}
  value, metrics, _ = models.family(model.prior).loss(net_of(model), net_variables(variables),
                                                      inner, rng)
  metrics = dict(metrics, bits_per_audio_sample=metrics['bits_per_sample'] / model.audio_hop)
  return value, metrics, {'levels': variables['levels']}


def generate(model: Model, variables: dict, rng: jax.Array, num_samples: int, *, batch: int = 1,
             prompt: np.ndarray | None = None, cond: dict | None = None, temperature=1.0,
             chunk_samples: int = 16000, first_stream: int = 0):
  """Float audio chunks [B, <= chunk_samples], `num_samples` per stream (module docstring).
  The prior draws with fold_in(rng, 0), level n's decoder with fold_in(rng, n)."""
  del cond
  if num_samples < 0:
    raise ValueError(f'num_samples={num_samples}: expected >= 0')
  levels = level_lib.level_models(model)
  temps = hierarchy.temperatures(temperature, len(levels) + 1)
  known = None if prompt is None else hierarchy.prompt_codes(levels, variables, prompt)
  if known is not None:
    batch = known[0].shape[0]
  hop = model.audio_hop
  given = 1 if known is None else known[0].shape[1]  # audio positions before the new ones
  given_top = 1 if known is None else known[-1].shape[1]
  top_needed = -(-(given + num_samples) // hop) - given_top  # new top codes
  step = max(1, chunk_samples // hop)
  top = models.family(model.prior).sample_codes(
      net_of(model), net_variables(variables), jax.random.fold_in(rng, 0),
      max(top_needed, 1), batch=batch, prompt=None if known is None else known[-1],
      temperature=temps[0], chunk_samples=step, first_stream=first_stream)
  rendered = hierarchy.render(levels, variables, top, rng, temps[1:], batch=batch, known=known,
                              chunk_samples=chunk_samples, first_stream=first_stream)
  return hierarchy.audio_chunks(levels[0], rendered, num_samples, chunk_samples)
