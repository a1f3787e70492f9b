"""A VQ-VAE level of a hierarchy of WaveNets over learned discrete codes (Dieleman, van den Oord
and Simonyan 2018, "The challenge of realistic music generation"; the codebook and encoder as
in Jukebox, Dhariwal et al. 2020).

    input codes [B, T] --embedding--> [B, T, C]
      --per stride s: conv (kernel 2s, stride s), then residual blocks
        (relu, conv kernel 3 dilation growth^j, relu, 1x1)--> relu, 1x1 --> z_e [B, T / hop, D]
      --nearest of K codes (EMA codebook; straight-through)--> codes [B, T / hop], z_q
    decoder: a WaveNet (models/wavenet) over the input codes, locally conditioned on z_q held
      for hop positions: the reconstruction NLL of the input, teacher-forced

Levels are trained one after another, each over the codes of the frozen levels below it: level
1 autoencodes the audio codes (8-bit mu-law), level n > 1 the codes of level n - 1 (its input
vocabulary is level n - 1's codebook, its hop relative to level n - 1's). Why codes rather
than Jukebox's audio at a larger hop: then each level's decoder *is* the upsampler the issue of
the hierarchy asks for, a prior over level n - 1's codes conditioned on level n's, trained by
the level's own reconstruction loss; the hierarchy is a lossless code of the audio whose
description length is the top prior's bits plus every level's reconstruction bits, each per
audio sample (`bits_per_audio_sample`); and sampling needs one WaveNet per level, not two.
The price: level n's training runs the frozen levels' encoders on every batch (cheap beside
the decoder: measured in the README).

The encoder is non-causal: code f depends on input positions f hop + lo .. f hop + hi,
(lo, hi) = `Model.receptive_field`. The decoder's output at position t reads frame (t + 1) //
hop and its neighbours (the WaveNet's width-3 frame convolution).

The quantiser (quantizer.py): nearest code by squared distance, the straight-through
estimator, a commitment loss |z_e - sg(e)|^2 (per element) weighted by `commitment`, a codebook
kept by exponential moving averages in the model state collection 'vq', and restarts of dead
codes at random encodings of the batch. The loss: reconstruction NLL (nats per input position)
+ commitment x its weight.

The variables: 'params' (the encoder, and the WaveNet decoder under 'wavenet'); the model state 'vq'
({'codebook': {'embedding', 'cluster_size', 'embed_sum'}}) and, above level 1, 'levels'
({'level1': {'params', 'vq'}, ...}): the frozen levels below, loaded from the workdir of the
level below by experiments/train_vqvae.py and kept in this level's checkpoints, so that a
level (and a prior over it) needs nothing but its own workdir once trained.

The family contract (models/__init__.py), an autoencoder: `init`, `loss`, `generate` (a level
reconstructs a prompt: encoded to its codes, then decoded by sampling each decoder down to
audio; without one it renders codes drawn independently from its codebook's usage; new music
comes from a prior, models/vqvae_prior.py), and `encode`, `quantize`, `decode` below.
"""

import jax
import jax.numpy as jnp
import numpy as np

from models.layers import sampling
from models.vqvae import hierarchy
from models.vqvae import quantizer
from models.vqvae.model import Model
from models.vqvae.model import codes_below
from models.vqvae.model import decoder_of
from models.vqvae.model import encode_codes
from models.vqvae.model import init
from models.vqvae.model import level_models
from models.vqvae.model import level_variables
from models.vqvae.model import loss


def own_variables(variables: dict) -> dict:
  """The level's own {'params', 'vq'} of its variables (without the frozen levels)."""
  return {'params': variables['params'], 'vq': variables['vq']}


def encode(model: Model, variables: dict, audio: jax.Array) -> jax.Array:
  """Audio codes [B, T] -> the level's encodings z_e [B, T / audio_hop, D], through the frozen
  levels below."""
  codes = codes_below(model, variables, jnp.asarray(audio))
  return model.apply(own_variables(variables), codes, method='encode')


def quantize(model: Model, variables: dict, z: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Encodings [B, F, D] -> (z_q straight-through [B, F, D], codes [B, F])."""
  del model
  z_q, codes, _ = quantizer.quantize(variables['vq']['codebook']['embedding'], z)
  return z_q, codes


def hierarchy_of(model: Model) -> list[Model]:
  """The levels from 1 up to and including `model`."""
  return level_models(model) + [model]


def with_own_level(model: Model, variables: dict) -> dict:
  """`variables` with the level itself among 'levels', as a prior over it holds them."""
  return {'levels': {**variables.get('levels', {}),
                     f'level{model.level}': own_variables(variables)}}


def decode(model: Model, variables: dict, rng: jax.Array, codes: np.ndarray,
           temperature=1.0, chunk_samples: int = 16000) -> np.ndarray:
  """The level's codes [B, F] -> audio codes [B, F audio_hop] (the first a start code),
  drawn by the decoders of this level and every level below in turn (hierarchy.render);
  `temperature` a float, or one per level, this level's first."""
  levels = hierarchy_of(model)
  codes = np.asarray(codes, np.int32)
  temps = hierarchy.temperatures(temperature, len(levels))
  return np.concatenate(list(hierarchy.render(
      levels, with_own_level(model, variables), iter([codes]), rng, temps, batch=codes.shape[0],
      top_start=False, chunk_samples=chunk_samples)), axis=1)


def unigram_codes(model: Model, variables: dict, rng: jax.Array, frames: tuple[int, int],
                  streams: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  """Codes at frames [a, b) of `streams`, drawn independently from the codebook's usage (its
  moving-average counts, at `temperature`): the level with no prior over time. Frame f of
  stream i draws with fold_in(fold_in(rng, f), i)."""
  counts = jnp.asarray(variables['vq']['codebook']['cluster_size'])
  logits = jnp.log(jnp.maximum(counts, 1e-6)) / max(temperature, 1e-6)
  draw = lambda f, i: jax.random.categorical(sampling.stream_key(rng, f, i), logits)
  return np.asarray(jax.vmap(jax.vmap(draw, (None, 0)), (0, None))(
      jnp.arange(*frames), jnp.asarray(streams)), np.int32).T  # [B, b - a]


def generate(model: Model, variables: dict, rng: jax.Array, num_samples: int, *, batch: int = 1,
             prompt: np.ndarray | None = None, cond: dict | None = None, temperature=1.0,
             chunk_samples: int = 16000, first_stream: int = 0):
  """The contract's `generate` of a level, rendered through the decoders of this level and
  every level below (temperatures: a float, or one per level, this level's first):
    * with `prompt` (float audio [B, P]): its reconstruction as this level codes it, its last
      P' samples (P' a multiple of the level's audio hop) encoded to the level's codes and
      decoded by sampling (its first sample the start code: silence), the first
      `num_samples` samples yielded (what the level keeps);
    * without: the level's codes drawn independently from its codebook's usage
      (`unigram_codes`, with the first temperature), so that only the decoders give the
      audio structure over time; new music comes from a prior over the level
      (experiments/configs/vqvae.py:prior)."""
  del cond
  levels = hierarchy_of(model)
  every = with_own_level(model, variables)
  temps = hierarchy.temperatures(temperature, len(levels))
  step = max(1, chunk_samples // model.audio_hop)
  if prompt is None:
    frames = -(-num_samples // model.audio_hop)
    streams = first_stream + np.arange(batch)
    top = (unigram_codes(model, variables, jax.random.fold_in(rng, 0), (s, min(s + step, frames)),
                         streams, temps[0]) for s in range(0, frames, step))
  else:
    codes = hierarchy.prompt_codes(levels, every, prompt)
    if num_samples > codes[0].shape[1]:
      raise ValueError(f'num_samples={num_samples}: a reconstruction of this prompt has '
                       f'{codes[0].shape[1]} samples')
    batch = codes[0].shape[0]
    top = (codes[-1][:, s:s + step] for s in range(0, codes[-1].shape[1], step))
  rendered = hierarchy.render(levels, every, top, rng, temps, batch=batch, top_start=False,
                              chunk_samples=chunk_samples, first_stream=first_stream)
  return hierarchy.audio_chunks(levels[0], rendered, num_samples, chunk_samples)
