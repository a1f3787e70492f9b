"""The Universal Music Translation Network (Mor, Wolf, Polyak and Taigman 2019, "A Universal
Music Translation Network"): one encoder shared by every domain (the instruments of
data.specs.INSTRUMENTS), a domain-confusion network, and one WaveNet decoder per domain.

    codes [B, T] (8-bit mu-law) --decode--> audio [B, T] --random local pitch modulation-->
      --continuous mu-law companding--> [B, T, 1] --conv k (C channels)-->
      --blocks x layers x (dilated conv k, dilation 2^i, non-causal -> relu -> 1x1, residual)-->
      --1x1--> [B, T, D] --mean over each hop of samples, tanh--> latent [B, F, D],
      F = ceil(T / hop)
    decoder of the row's domain: a WaveNet (models/wavenet) over the clean codes, locally
      conditioned on the latent frames (its width-3 frame convolution, each frame held for
      `hop_length` samples): teacher-forced NLL
    confusion: gradient_reversal(latent, lambda) --confusion_layers x (conv, ELU)--> 1x1 -->
      logits per frame, averaged over the frames --> cross-entropy with the row's domain

The pooling is the dataset's hop (the paper pools 800 samples, 50 ms), so latent frames are the
dataset's frames: frame f is the tanh of the mean of the encoder's outputs at samples
[f hop, (f + 1) hop) (the last frame over the samples there are), each of which reads the
input within `encoder_receptive_field` // 2 samples on either side. The tanh is ours: it
bounds the latent, so that the encoder cannot win the confusion game by scaling it (which
makes the classifier's logits, and the cross-entropy the encoder ascends, as large as it
likes: without it, the first runlocal run's confusion CE went to 2,000 within 200 steps, its
gradient norm to 2e5).

The objective is one differentiable function, so the standard trainer (experiments/train.py,
one optimiser) trains it:

    loss = NLL (nats per sample) + CE(classifier(gradient_reversal(latent, lambda)))

The classifier descends its cross-entropy; the gradient reversal layer (identity forward,
gradient times -lambda backward) makes the encoder ascend lambda times it, the paper's
adversarial term with lambda = `confusion_weight` (1e-2). The decoder reads the latent without
the reversal, so the encoder also descends the NLL. Metrics: 'nll', 'bits_per_sample' (per 8-bit
mu-law code, as WaveNet reports), 'confusion_ce', 'confusion_accuracy' (of the rows that
`batch['mask']` keeps) and 'weight' (the predicted samples).

Pitch modulation (the family's augmentation, drawn in `loss` from its rng): the encoder reads
the audio time-warped by piecewise-constant rates over consecutive windows of
`pitch_seconds` (0.25-0.5 s, uniform; the first starts at a random phase before the crop),
rate 2^(s / 12) with s uniform in [-pitch_semitones, pitch_semitones]: output sample n reads
the input at position p(n), p(n + 1) - p(n) the rate of n's window, p anchored at the crop's
centre, linearly interpolated (positions past either end hold the end sample). Within a window
every frequency is scaled by its rate: the paper's local pitch shift of random 0.25-0.5 s
segments by -0.5..0.5 semitones, as a resampling (the tempo moves with the pitch, by at most
2.9%; the encoder's frames drift from the decoder's by at most that fraction of the distance
from the centre). The decoder's targets are the clean audio. Without an rng (None) there is no
modulation.

Parameters: 'encoder', 'confusion' and 'decoders', the K = `num_domains` WaveNets' trees
stacked along a leading axis (logical name 'domain', unsharded unless a rule maps it), so they
shard and checkpoint as one tree. `loss` gathers each row's decoder (jnp.take over the domain
axis) and vmaps the WaveNet's forward over the rows: one decoder's cost per row, not K.
`decoder(model)` is the WaveNet Model and `decoder_variables(variables, k)` domain k's
variables, for its sampler and tests.

The family contract (models/__init__.py), kind translator: `init`, `loss`, `translate` (encode
the source audio, no modulation; decoder target[b] draws row b with the cached WaveNet sampler
from a silent first sample, conditioned on the latent frames, so that sample n of the output
reads the frame of source sample n), and `generate`, which raises ValueError: the UMT draws
audio from a source recording. Its decoders keep the autoregressive contract (their tests:
tests/models/test_umt.py).

Files: model.py (the encoder, the classifier, the Model with its stacked decoders), augment.py
(the gradient reversal layer and the pitch modulation: pure functions), and here the contract.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import wavenet
from models.layers import autoregressive
from models.layers import conditioning
from models.umt.augment import gradient_reversal
from models.umt.augment import pitch_modulate
from models.umt.augment import resample
from models.umt.augment import warp_positions
from models.umt.augment import warp_windows
from models.umt.model import LATENT_KEY
from models.umt.model import Confusion
from models.umt.model import Encoder
from models.umt.model import Model
from models.umt.model import compand
from models.umt.model import decoder
from models.umt.model import decoder_variables
from models.umt.model import pool
from models.umt.model import to_audio

GENERATE_ERROR = ('the Universal Music Translation Network draws audio from a source '
                  'recording: use experiments/translate.py')


def init(model: Model, rng: jax.Array, batch: dict) -> dict:
  """{'params': {'encoder', 'confusion', 'decoders'}}; shapes do not depend on the batch."""
  del batch
  audio = jnp.zeros((1, model.hop_length), jnp.float32)
  return model.init(rng, audio, jnp.zeros(audio.shape, jnp.int32))


@functools.partial(jax.jit, static_argnums=(0,))
def latent(model: Model, variables: dict, audio: jax.Array) -> jax.Array:
  """Float audio [B, T] -> latent frames [B, ceil(T / hop), D] (no pitch modulation)."""
  return model.apply(variables, audio, method='encode')


def decode_rows(model: Model, variables: dict, ids: jax.Array, codes: jax.Array,
                frames: jax.Array) -> jax.Array:
  """Teacher forcing: row b's codes [T] through decoder ids[b], conditioned on its latent
  frames [F, D] -> logits [B, T, Q]. The WaveNet's forward is vmapped over the rows, each with
  its own gathered parameters; inside, a decoder's batch is one row, left unsharded."""
  dec = decoder(model)
  rows = jax.tree.map(lambda a: jnp.take(a, ids, axis=0), variables['params']['decoders'])

  def one(p, c, z):
    return dec.apply({'params': p}, c[None], z[None])[0]

  rules = tuple((name, None if name == 'batch' else axis)
                for name, axis in nn.get_logical_axis_rules())
  with nn.logical_axis_rules(rules):
    out = jax.vmap(one)(rows, codes, frames)
  return nn.with_logical_constraint(out, ('batch', 'time', 'vocab'))


def loss(model: Model, variables: dict, batch: dict, rng=None) -> tuple:
  """(NLL + confusion CE, metrics, {}): see the module docstring."""
  codes = jnp.asarray(batch['audio'])
  ids = conditioning.ids(batch, 'instrument')
  audio = to_audio(model, codes)
  if rng is not None and model.pitch_semitones > 0:
    audio = pitch_modulate(rng, audio, model.sample_rate, model.pitch_semitones,
                           tuple(model.pitch_seconds))
  z = model.apply(variables, audio, method='encode')  # [B, F, D]
  logits = model.apply(variables, gradient_reversal(z, model.confusion_weight),
                       method='classify')  # [B, K]
  out = decode_rows(model, variables, ids, codes, z)
  per_sample = wavenet.nll(decoder(model), out[:, :-1], codes[:, 1:])  # [B, T - 1]
  nll, metrics = autoregressive.code_metrics(per_sample, batch)
  mask = jnp.asarray(batch.get('mask', jnp.ones(codes.shape[:1], bool)))
  rows = jnp.maximum(jnp.sum(mask), 1)
  ce_rows = -jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, None], axis=1)[:, 0]
  ce = jnp.sum(jnp.where(mask, ce_rows, 0.)) / rows
  right = jnp.sum(jnp.where(mask, jnp.argmax(logits, -1) == ids, False)) / rows
  return nll + ce, {**metrics, 'confusion_ce': ce, 'confusion_accuracy': right}, {}


def translate(model: Model, variables: dict, rng: jax.Array, audio, source, target,
              temperature: float = 1.0, *, chunk_samples: int = 16000,
              first_stream: int = 0) -> np.ndarray:
  """Float audio [B, T] in [-1, 1] -> float32 [B, T]: row b played by domain target[b].

  The source audio is encoded (no pitch modulation); decoder target[b] draws row b with the
  cached WaveNet sampler (wavenet.sample_codes) from a silent first sample, conditioned on the
  latent frames. Rows run in groups of consecutive rows with one target, row b as stream
  first_stream + b, so that each row's draws depend on (rng, position, its row) only. `source`
  is unused: the encoder is domain-agnostic.
  """
  del source
  audio = np.asarray(audio, np.float32)
  target = np.asarray(target)
  if audio.ndim != 2 or audio.shape[1] < 1:
    raise ValueError(f'audio of shape {audio.shape}: expected float audio [B, T], T >= 1')
  if target.shape != audio.shape[:1] or not np.all((target >= 0) &
                                                   (target < model.num_domains)):
    raise ValueError(f'target {target.tolist()}: expected {audio.shape[0]} ids in '
                     f'0..{model.num_domains - 1} (data.specs.INSTRUMENTS)')
  b, t = audio.shape
  frames = np.asarray(latent(model, variables, jnp.asarray(audio)))
  dec = decoder(model)
  out = np.empty((b, t), np.float32)
  lo = 0
  while lo < b:
    hi = lo + 1
    while hi < b and target[hi] == target[lo]:
      hi += 1
    codes = np.full((hi - lo, 1), model.num_classes // 2, np.int32)  # the sampler's start
    if t > 1:
      drawn = wavenet.sample_codes(dec, decoder_variables(variables, int(target[lo])), rng,
                                   t - 1, batch=hi - lo, local=frames[lo:hi],
                                   temperature=temperature, chunk_samples=chunk_samples,
                                   first_stream=first_stream + lo)
      codes = np.concatenate([codes, *drawn], axis=1)
    out[lo:hi] = autoregressive.decode(dec, codes)
    lo = hi
  return out


def generate(model: Model, variables: dict, rng: jax.Array, num_samples: int, **kwargs):
  """ValueError: the UMT only translates (`translate`)."""
  del model, variables, rng, num_samples, kwargs
  raise ValueError(GENERATE_ERROR)
