"""A VQ-VAE level: strided convolutional encoder, EMA vector quantiser, WaveNet decoder.

The architecture and its conventions are described in models/vqvae/__init__.py.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import autoregressive
from models.layers import conv as conv_lib
from models.layers import sampling
from models.vqvae import quantizer
from models import wavenet


class Model(autoregressive.Unconditional, nn.Module):
  """One level; `Model(**config.model)`. Its parameters: the encoder's and, under 'decoder', the
  WaveNet's; its model state: the codebook ('vq') and the frozen levels below ('levels')."""
  num_classes: int = 256  # 2^bits of the audio codes (derived from config.input)
  encoding: str = 'mu_law'  # of the audio codes (derived)
  sample_rate: int = 16000  # of the audio (derived)
  strides: tuple[int, ...] = (2, 2, 2)  # the encoder's downsampling; their product is the hop
  channels: int = 64  # the encoder's width
  res_blocks: int = 2  # residual blocks after each downsampling, dilations growth^j
  dilation_growth: int = 3
  codebook_size: int = 512
  code_dim: int = 64
  commitment: float = 0.25  # beta: the commitment term's weight in the loss
  ema_decay: float = 0.99
  restart_threshold: float = 1.0  # codes whose moving-average count falls below are restarted
  decoder: tuple = ()  # the WaveNet decoder's Model fields, as (name, value) pairs
  levels: tuple = ()  # the frozen levels below, level 1 first: each its Model fields as pairs
  # (derived from config.levels by models.create; empty for level 1)

  def __post_init__(self):
    if not self.strides or min(self.strides) < 1:
      raise ValueError(f'model.strides={self.strides}: expected one or more strides >= 1')
    size = self.codebook_size
    if size < 2 or size & (size - 1):
      raise ValueError(f'model.codebook_size={size}: expected a power of 2 (the codes are the '
                       'next level\'s vocabulary)')
    autoregressive.check_encoding(self)
    super().__post_init__()

  @property
  def level(self) -> int:
    return len(self.levels) + 1

  @property
  def hop(self) -> int:
    """Input positions (codes of the level below, or audio samples) per code of this level."""
    return math.prod(self.strides)

  @property
  def input_classes(self) -> int:
    """The vocabulary of the level's input: audio codes, or the level below's codebook."""
    return dict(self.levels[-1])['codebook_size'] if self.levels else self.num_classes

  @property
  def input_hop(self) -> int:
    """Audio samples per input position (1 at level 1)."""
    return math.prod(math.prod(dict(kw)['strides']) for kw in self.levels)

  @property
  def audio_hop(self) -> int:
    """Audio samples per code of this level."""
    return self.input_hop * self.hop

  def encoder_layers(self) -> list[tuple[int, int, int]]:
    """(kernel, stride, dilation) of each convolution on the encoder's path, in order."""
    out = []
    for s in self.strides:
      out.append((2 * s, s, 1))
      out += [(3, 1, self.dilation_growth ** j) for j in range(self.res_blocks)]
    return out

  @property
  def receptive_field(self) -> tuple[int, int]:
    """(lo, hi): code f depends on input positions f hop + lo .. f hop + hi (inclusive)."""
    lo = hi = 0
    for k, s, d in reversed(self.encoder_layers()):
      left = (k - 1) * d // 2  # layers.conv.Conv's padding
      lo, hi = lo * s - left, hi * s - left + (k - 1) * d
    return lo, hi

  def setup(self):
    c = self.channels
    self.embed = self.param('embed', nn.initializers.normal(1.), (self.input_classes, c))
    self.down = [conv_lib.Conv(c, (2 * s,), strides=(s,), name=f'down{i}')
                 for i, s in enumerate(self.strides)]
    self.res = [[(conv_lib.Conv(c, (3,), dilation=(self.dilation_growth ** j,),
                                name=f'res{i}_{j}_dilated'),
                  conv_lib.Conv(c, (1,), name=f'res{i}_{j}_out'))
                 for j in range(self.res_blocks)] for i in range(len(self.strides))]
    self.proj = conv_lib.Conv(self.code_dim, (1,), name='proj')
    self.wavenet = decoder_of(self)
    self.codebook = self.variable('vq', 'codebook', lambda: quantizer.init_state(
        self.make_rng('params'), self.codebook_size, self.code_dim))

  def encode(self, codes: jax.Array) -> jax.Array:
    """Input codes [B, T] (or their one-hot rows [B, T, Q]) -> encodings z_e [B, T / hop, D]."""
    t = codes.shape[1]
    if t % self.hop:
      raise ValueError(f'{t} input positions at level {self.level}: expected a multiple of the '
                       f'level\'s hop {self.hop} (config.input.crop_samples: a multiple of '
                       f'{self.audio_hop} audio samples)')
    x = codes @ self.embed if codes.ndim == 3 else self.embed[codes]  # [B, T, C]
    for down, blocks in zip(self.down, self.res):
      x = down(x)
      for dilated, out in blocks:
        x = x + out(jax.nn.relu(dilated(jax.nn.relu(x))))
    return self.proj(jax.nn.relu(x)).astype(jnp.float32)

  def decode(self, codes: jax.Array, z_q: jax.Array) -> jax.Array:
    """Teacher forcing: input codes [B, T] and quantised encodings [B, T / hop, D] -> the
    decoder's logits [B, T, Q] (position t predicts code t + 1)."""
    return self.wavenet(codes, local=z_q)

  def __call__(self, codes: jax.Array) -> jax.Array:
    """The reconstruction logits of codes [B, T] through their nearest codes."""
    embedding = self.codebook.value['embedding']
    return self.decode(codes, embedding[quantizer.nearest(embedding, self.encode(codes))])


def decoder_of(model: Model) -> nn.Module:
  """The level's WaveNet decoder: over the input vocabulary, locally conditioned on code
  vectors [B, F, code_dim] held for `hop` positions each."""
  kwargs = dict(model.decoder)
  return wavenet.Model(**{
      **kwargs, 'num_classes': model.input_classes,
      'encoding': model.encoding if model.level == 1 else 'linear',
      'local_keys': ('codes',), 'local_features': model.code_dim, 'hop_length': model.hop,
      'output': 'softmax'})


def level_models(model) -> list[Model]:
  """The Models of the frozen levels below `model` (a level or a prior), level 1 first."""
  return [Model(**{**dict(kw), 'levels': model.levels[:i]}) for i, kw in enumerate(model.levels)]


def level_variables(variables: dict, i: int) -> dict:
  """{'params', 'vq'} of frozen level i (1-based) from a model's variables."""
  return variables['levels'][f'level{i}']


def encode_codes(model: Model, variables: dict, codes: jax.Array) -> jax.Array:
  """Input codes [B, T] -> the level's codes [B, T / hop] (nearest codes, no update)."""
  z = model.apply(variables, codes, method='encode')
  return quantizer.nearest(variables['vq']['codebook']['embedding'], z)


def codes_below(model, variables: dict, audio: jax.Array) -> jax.Array:
  """Audio codes [B, T] -> the codes of the highest frozen level below `model` (a level or a
  prior), through every frozen level in turn; the audio codes where there is none."""
  codes = audio
  for i, level in enumerate(level_models(model)):
    codes = encode_codes(level, level_variables(variables, i + 1), codes)
  return codes


def init_levels(model, rng: jax.Array, audio: jax.Array) -> dict:
  """{'level1': {'params', 'vq'}, ...}: random variables for the frozen levels below `model`, of
  the shapes the trainer loads into them (experiments/train_vqvae.py)."""
  out, codes = {}, jnp.zeros(audio.shape, jnp.int32)
  for i, level in enumerate(level_models(model)):
    out[f'level{i + 1}'] = level.init(jax.random.fold_in(rng, i + 1), codes)
    codes = jnp.zeros((codes.shape[0], codes.shape[1] // level.hop), jnp.int32)
  return out


def init(model: Model, rng: jax.Array, batch: dict) -> dict:
  """{'params', 'vq', 'levels' (if any)} on a batch of zeros shaped as training batches."""
  audio = jnp.asarray(batch['audio'])
  levels = init_levels(model, rng, audio)
  codes = jnp.zeros((audio.shape[0], audio.shape[1] // model.input_hop), jnp.int32)
  variables = dict(model.init(rng, codes))
  if levels:
    variables['levels'] = levels
  return variables


def loss(model: Model, variables: dict, batch: dict, rng) -> tuple:
  """(NLL + commitment x beta, metrics, model state): the reconstruction NLL of the level's
  input codes in nats per position, its EMA codebook updated from the batch and its dead codes
  restarted (quantizer.py).

  metrics: 'nll' and 'bits_per_sample' per input position (at level 1 an audio sample; above,
  a code of the level below), 'bits_per_audio_sample' (that over the audio samples an input
  position spans: the level's share of the hierarchy's description length), 'commitment',
  'perplexity' (of the batch's codes), 'dead_fraction' (of the codebook), 'weight'.
  """
  if rng is None:
    rng = jax.random.key(0)
  codes = codes_below(model, variables, jnp.asarray(batch['audio']))
  own = {'params': variables['params'], 'vq': variables['vq']}
  book = variables['vq']['codebook']
  z = model.apply(own, codes, method='encode')  # [B, F, D]
  z_q, idx, err = quantizer.quantize(book['embedding'], z)
  out = model.apply(own, codes, z_q, method='decode')  # [B, T, Q]
  per_position = sampling.softmax_nll(out[:, :-1], codes[:, 1:])  # [B, T - 1]
  mask = batch.get('mask', jnp.ones(codes.shape[:1], bool))
  rows = jnp.sum(mask)
  count = rows * per_position.shape[1]
  nll = jnp.sum(jnp.where(mask[:, None], per_position, 0.)) / jnp.maximum(count, 1)
  weights = jnp.broadcast_to(mask[:, None], idx.shape).astype(jnp.float32)
  commitment = jnp.sum(err * weights) / jnp.maximum(jnp.sum(weights), 1)
  updated = quantizer.ema_update(book, z, idx, weights, model.ema_decay)
  updated, dead = quantizer.restart_dead(updated, z, rng, model.restart_threshold)
  bits = nll / autoregressive.LOG2
  metrics = {'nll': nll, 'bits_per_sample': bits,
             'bits_per_audio_sample': bits / model.input_hop, 'commitment': commitment,
             'perplexity': quantizer.perplexity(quantizer.usage(idx, weights,
                                                                model.codebook_size)),
             'dead_fraction': dead, 'weight': count}
  model_state = {'vq': {'codebook': updated}}
  if model.levels:
    model_state['levels'] = variables['levels']
  return nll + model.commitment * commitment, metrics, model_state
