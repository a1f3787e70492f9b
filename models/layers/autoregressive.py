"""What every autoregressive family over audio codes shares.

Such a family's `Model` has
  * `num_classes` (2^bits codes) and `encoding` ('mu_law' or 'linear'), derived from
    `config.input` by `models.create`;
  * `conditioning(batch) -> dict` of its apply keyword arguments other than the codes
    (empty for an unconditional model), and `conditions`, the batch keys they come from;
  * `__call__(codes [B, T], **conditioning) -> out [B, T, ...]`, where position t sees
    codes[:, :t + 1] and predicts codes[:, t + 1].
Its module has a code-level sampler `sample_codes(model, variables, rng, n, batch=, prompt=,
temperature=, chunk_samples=, first_stream=, resume=, keep=, **conditioning)` yielding code
chunks [B, n] (`resume` / `keep`: a saved sampler state to continue from / a dict receiving it,
`keep_state`), and
`nll(model, out, targets)` in nats. The functions below make of these the family contract's
`init`, `loss` and `generate` (models/__init__.py).
"""

from collections.abc import Callable, Iterator
import math

import jax
import jax.numpy as jnp
import numpy as np

from data import audio as audio_lib

LOG2 = math.log(2.0)
CODE_ENCODINGS = ('mu_law', 'linear')


def check_encoding(model) -> None:
  """ValueError unless the model's codes decode to audio (called from __post_init__)."""
  if model.encoding not in CODE_ENCODINGS:
    raise ValueError(f'model.encoding={model.encoding!r} (from config.input.encoding): '
                     f'{type(model).__module__.split(".")[1]} models audio codes; expected one '
                     f'of {", ".join(CODE_ENCODINGS)}')
  if model.num_classes < 2 or model.num_classes & (model.num_classes - 1):
    raise ValueError(f'model.num_classes={model.num_classes}: expected 2^bits codes')


class Unconditional:
  """Mixin of a code Model (before nn.Module in its bases) that reads no batch key besides
  'audio': no `conditions`, and an empty `conditioning`."""
  conditions = ()

  def conditioning(self, batch: dict) -> dict:
    del batch
    return {}


def bits(model) -> int:
  return int(model.num_classes).bit_length() - 1


def inputs(model, batch: dict) -> dict:
  """A batch -> the model's apply arguments: codes and its conditioning."""
  return {'codes': batch['audio'], **model.conditioning(batch)}


def init(model, rng: jax.Array, batch: dict) -> dict:
  """The variables of `model` initialised from `rng` on `batch` (a dummy batch will do)."""
  return model.init(rng, **inputs(model, batch))


def loss(model, variables: dict, batch: dict, nll: Callable) -> tuple:
  """Teacher forcing: mean NLL in nats of codes[:, 1:] given outputs[:, :-1], over the rows
  that `batch['mask']` keeps (all without one): (loss, metrics, model state {}).

  metrics: 'nll' (= loss), 'bits_per_sample' (8-bit mu-law codes: bits per code), and
  'weight', the number of predicted samples they average over.
  """
  x = inputs(model, batch)
  out = model.apply(variables, **x)  # [B, T, ...]
  codes = x['codes']
  per_sample = nll(model, out[:, :-1], codes[:, 1:])  # [B, T - 1]: position t predicts t + 1
  return (*code_metrics(per_sample, batch), {})


def code_metrics(per_sample: jax.Array, batch: dict) -> tuple:
  """(mean NLL in nats, {'nll', 'bits_per_sample', 'weight'}) of per-sample NLLs [B, N] over
  the rows that `batch['mask']` keeps (all without one)."""
  mask = jnp.asarray(batch.get('mask', jnp.ones(per_sample.shape[:1], bool)))[:, None]
  count = jnp.sum(mask) * per_sample.shape[1]
  mean = jnp.sum(jnp.where(mask, per_sample, 0.)) / jnp.maximum(count, 1)
  return mean, {'nll': mean, 'bits_per_sample': mean / LOG2, 'weight': count}


def keep_state(keep: dict | None, cache: dict, x: jax.Array) -> None:
  """A sampler's state {'cache', 'x'} (its cache and the last codes [B]) into `keep['state']`,
  where `keep` is given: the samplers set it before their first chunk and after each, so that
  a caller can save it (experiments/stream.py) and pass it back as `resume` later. The arrays
  are valid until the sampler is asked for its next chunk (which donates the cache)."""
  if keep is not None:
    keep['state'] = {'cache': cache, 'x': x}


def encode(model, wave: np.ndarray) -> np.ndarray:
  """Float audio in [-1, 1] -> the model's int32 codes."""
  return audio_lib.encode(np.asarray(wave, np.float32), model.encoding, bits(model))


def decode(model, codes: np.ndarray) -> np.ndarray:
  """The model's codes -> float32 audio in [-1, 1]."""
  return audio_lib.decode(codes, model.encoding, bits(model)).astype(np.float32)


def generate(sample_codes: Callable, model, variables: dict, rng: jax.Array, num_samples: int,
             *, batch: int = 1, prompt: np.ndarray | None = None, cond: dict | None = None,
             temperature: float = 1.0, chunk_samples: int = 16000,
             first_stream: int = 0, **options) -> Iterator[np.ndarray]:
  """The contract's `generate` of a code model: float prompt [B, P] -> codes -> the family's
  `sample_codes` -> float audio chunks [B, <= chunk_samples]; `options` go to `sample_codes`
  (its `resume` and `keep`: a saved sampler state, `keep_state`)."""
  if num_samples < 0:
    raise ValueError(f'num_samples={num_samples}: expected >= 0')
  codes = None
  if prompt is not None:
    prompt = np.asarray(prompt, np.float32)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
      raise ValueError(f'prompt of shape {prompt.shape}: expected float audio [B, P], P >= 1')
    codes = encode(model, prompt)
  conditioning = model.conditioning(cond or {})
  for chunk in sample_codes(model, variables, rng, num_samples, batch=batch, prompt=codes,
                            temperature=temperature, chunk_samples=chunk_samples,
                            first_stream=first_stream, **options, **conditioning):
    yield decode(model, chunk)
