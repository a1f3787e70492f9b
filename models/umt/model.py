"""The UMT's networks: the shared non-causal encoder, the domain-confusion classifier, and the
Model holding them with the K WaveNet decoders stacked on a 'domain' axis; the architecture is
described in models/umt/__init__.py.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from data import specs
from models import wavenet
from models.layers import autoregressive
from models.layers import params as params_lib

LATENT_KEY = 'latent'  # the decoders' local conditioning key (the latent is no batch key)


def _shift(x: jax.Array, s: int) -> jax.Array:
  """x [B, T, C] moved by s steps along time (x[t - s] at t), zeros where it has none."""
  t = x.shape[1]
  if s == 0:
    return x
  if abs(s) >= t:
    return jnp.zeros_like(x)
  if s > 0:
    return jnp.pad(x[:, :t - s], ((0, 0), (s, 0), (0, 0)))
  return jnp.pad(x[:, -s:], ((0, 0), (0, -s), (0, 0)))


def _conv(x: jax.Array, kernel: jax.Array, dilation: int) -> jax.Array:
  """Non-causal 'same' convolution: x [B, T, C], kernel [k, C, O] -> [B, T, O]; tap j reads
  x[t + (j - (k - 1) // 2) d]. One matmul per tap, summed (as the WaveNet's layers: on CPU
  several times faster than XLA's dilated convolution, forward and backward)."""
  k = kernel.shape[0]
  return sum(_shift(x, ((k - 1) // 2 - j) * dilation) @ kernel[j] for j in range(k))


def pool(z: jax.Array, hop: int) -> jax.Array:
  """[B, T, D] -> [B, ceil(T / hop), D]: the mean of each hop of positions (the last frame over
  the positions it has)."""
  b, t, d = z.shape
  f = -(-t // hop)
  total = jnp.pad(z, ((0, 0), (0, f * hop - t), (0, 0))).reshape(b, f, hop, d).sum(2)
  return total / jnp.minimum(hop, t - hop * jnp.arange(f))[:, None].astype(z.dtype)


class Encoder(nn.Module):
  """Companded audio [B, T] -> latent frames [B, F, D] in (-1, 1). Logical axes: embed
  (residual), mlp (the dilated convolutions' outputs), cond (latent)."""
  channels: int
  blocks: int
  layers: int
  kernel_size: int
  latent_dim: int
  hop_length: int
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, c, dtype = self.kernel_size, self.channels, jnp.dtype(self.dtype)
    dense = functools.partial(params_lib.dense, self)
    p = {'start': dense('start', (k, 1), c, (None, None), 'embed'),
         'proj': dense('proj', c, self.latent_dim, 'embed', 'cond')}
    for i in range(self.blocks * self.layers):
      p[f'l{i}'] = {'conv': dense(f'l{i}_conv', (k, c), c, (None, 'embed'), 'mlp'),
                    'out': dense(f'l{i}_out', c, c, 'mlp', 'embed')}
    p = params_lib.cast(p, dtype)
    h = _conv(x[..., None].astype(dtype), p['start']['kernel'], 1) + p['start']['bias']
    for i in range(self.blocks * self.layers):
      lp = p[f'l{i}']
      y = jax.nn.relu(_conv(h, lp['conv']['kernel'], 2 ** (i % self.layers)) +
                      lp['conv']['bias'])
      h = nn.with_logical_constraint(h + y @ lp['out']['kernel'] + lp['out']['bias'],
                                     ('batch', 'time', 'embed'))
    z = h @ p['proj']['kernel'] + p['proj']['bias']
    return jnp.tanh(pool(z.astype(jnp.float32), self.hop_length))


class Confusion(nn.Module):
  """Latent frames [B, F, D] -> domain logits [B, K], the frames' logits averaged (the
  published ZDiscriminator). Small: its parameters are replicated."""
  num_domains: int
  layers: int
  channels: int
  kernel_size: int
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h, d = z.astype(jnp.float32), z.shape[-1]
    for i in range(self.layers):
      p = params_lib.dense(self, f'l{i}', (self.kernel_size, d), self.channels, (None, None),
                           None)
      h = jax.nn.elu(_conv(h, p['kernel'].astype(jnp.float32), 1) + p['bias'])
      d = self.channels
    p = params_lib.dense(self, 'out', d, self.num_domains, None, None)
    return jnp.mean(h @ p['kernel'] + p['bias'], axis=1)


class Model(nn.Module):
  """The UMT; `Model(**config.model)`. Parameters 'encoder', 'confusion' and 'decoders' (K
  WaveNets stacked on a leading 'domain' axis)."""
  num_classes: int = 256  # 2^bits of config.input (derived)
  encoding: str = 'mu_law'  # config.input.encoding (derived)
  sample_rate: int = 16000  # of the dataset (derived): the pitch windows are in seconds
  hop_length: int = 512  # samples per latent frame: the dataset's hop (derived)
  num_domains: int = len(specs.INSTRUMENTS)
  encoder_blocks: int = 3
  encoder_layers: int = 10  # per block, dilations 1 .. 2^(layers - 1)
  encoder_channels: int = 128
  encoder_kernel: int = 3  # odd: the encoder is centred
  latent_dim: int = 64
  confusion_layers: int = 3
  confusion_channels: int = 100
  confusion_kernel: int = 1  # over frames (the published ZDiscriminator's 1x1 convolutions)
  confusion_weight: float = 1e-2  # lambda: the gradient reversal's scale
  pitch_semitones: float = 0.5  # the modulation's largest shift; 0: none
  pitch_seconds: tuple[float, float] = (0.25, 0.5)  # its windows' lengths
  # The WaveNet decoders' Model fields as (name, value) pairs; the UMT sets their data facts,
  # local_keys=('latent',), local_features=latent_dim, hop_length and output='softmax'.
  decoder: tuple = ()
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  conditions = ('instrument',)  # the batch keys read besides 'audio'

  def __post_init__(self):
    if self.num_domains < 1:
      raise ValueError(f'model.num_domains={self.num_domains}: expected at least 1')
    if self.hop_length < 1:
      raise ValueError(f'model.hop_length={self.hop_length}: expected the samples per frame')
    if self.encoder_kernel % 2 == 0:
      raise ValueError(f'model.encoder_kernel={self.encoder_kernel}: expected an odd width')
    lo, hi = tuple(self.pitch_seconds)
    if not 0 < lo <= hi:
      raise ValueError(f'model.pitch_seconds={tuple(self.pitch_seconds)}: expected '
                       '0 < shortest <= longest')
    autoregressive.check_encoding(self)
    super().__post_init__()

  @property
  def receptive_field(self) -> int:
    """The decoders' receptive field (samples of past audio each prediction reads)."""
    return decoder(self).receptive_field

  @property
  def encoder_receptive_field(self) -> int:
    """Samples of input that one encoder output reads, centred on its own."""
    return 1 + (self.encoder_kernel - 1) * (1 + self.encoder_blocks *
                                            (2 ** self.encoder_layers - 1))

  def setup(self):
    self.encoder = Encoder(self.encoder_channels, self.encoder_blocks, self.encoder_layers,
                           self.encoder_kernel, self.latent_dim, self.hop_length, self.dtype,
                           self.param_dtype)
    self.confusion = Confusion(self.num_domains, self.confusion_layers,
                               self.confusion_channels, self.confusion_kernel,
                               self.param_dtype)
    stacked = nn.vmap(wavenet.Model, variable_axes={'params': 0}, split_rngs={'params': True},
                      in_axes=0, out_axes=0, axis_size=self.num_domains,
                      metadata_params={nn.PARTITION_NAME: 'domain'})
    self.decoders = stacked(**_decoder_fields(self))

  def encode(self, audio: jax.Array) -> jax.Array:
    """Float audio [B, T] in [-1, 1] -> latent frames [B, ceil(T / hop), D]."""
    return self.encoder(compand(self, audio))

  def classify(self, latent: jax.Array) -> jax.Array:
    """Latent frames [B, F, D] -> domain logits [B, K]."""
    return self.confusion(latent)

  def __call__(self, audio: jax.Array, codes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(domain logits [B, K], every decoder's teacher-forced logits [K, B, T, Q]) of float
    audio [B, T] and its codes [B, T]."""
    latent = self.encode(audio)
    every = lambda a: jnp.broadcast_to(a, (self.num_domains, *a.shape))
    return self.classify(latent), self.decoders(every(codes), every(latent))


def _decoder_fields(model: Model) -> dict:
  return {'dtype': model.dtype, 'param_dtype': model.param_dtype, **dict(model.decoder),
          'num_classes': model.num_classes, 'encoding': model.encoding,
          'local_keys': (LATENT_KEY,), 'local_features': model.latent_dim,
          'hop_length': model.hop_length, 'output': 'softmax', 'num_global': 0,
          'global_key': None, 'kernel': False}  # vmapped over rows and decoders: pure JAX


def decoder(model: Model) -> wavenet.Model:
  """The decoders' WaveNet Model (each domain's parameters: `decoder_variables`)."""
  return wavenet.Model(**_decoder_fields(model))


def decoder_variables(variables: dict, domain) -> dict:
  """{'params': domain's WaveNet parameters} of the UMT's variables."""
  stacked = nn.unbox(variables['params']['decoders'])
  return {'params': jax.tree.map(lambda a: a[domain], stacked)}


def to_audio(model: Model, codes: jax.Array) -> jax.Array:
  """Codes [B, T] -> float32 audio in [-1, 1] (data/audio.py's decoding, in JAX)."""
  q = model.num_classes - 1
  y = codes.astype(jnp.float32) * (2. / q) - 1.
  if model.encoding == 'linear':
    return y
  return jnp.sign(y) * jnp.expm1(jnp.abs(y) * math.log1p(q)) / q


def compand(model: Model, audio: jax.Array) -> jax.Array:
  """The encoder's input: continuous mu-law companding (mu = 2^bits - 1) of audio clipped to
  [-1, 1] (the published encoder reads scaled mu-law codes)."""
  q = model.num_classes - 1
  x = jnp.clip(audio.astype(jnp.float32), -1., 1.)
  return jnp.sign(x) * jnp.log1p(q * jnp.abs(x)) / math.log1p(q)
