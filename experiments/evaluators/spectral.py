"""A mel vocoder against Griffin-Lim: spectral distances of both to the reference audio.

    config.evals.resynthesis = dict(type='spectral', every_steps=5000, split='validation',
                                    clips=8, seconds=2.0, griffin_lim_iters=64, temperature=1.0)

The first `clips` segments of `split`, each cropped to its first `seconds` (rounded up to whole
frames), are the references. Their 'mel' frames (config.input.mel, as in training) and the
model's other conditioning keys are read once through the input pipeline. The model vocodes
them with its `generate`, drawn with fold_in(key(config.seed + 2), 0); Griffin-Lim
reconstructs the same mels: data.spectral.mel_to_stft, then `griffin_lim_iters` fast
iterations from a random phase seeded by config.seed. Both are scored against the references
by data.spectral.spectral_distances with the mel settings of the input, averaged over clips:

    log_mel_l1       mean |log mel - log mel of the reference|, nats (lower is better)
    mr_stft          multi-resolution STFT distance (lower is better)
    magnitude_snr    SNR of the STFT magnitudes, dB (higher is better)

`run` returns the model's figures, Griffin-Lim's as 'griffin_lim_<name>', those of the
reference passed through the training data's encoding and back as 'encoded_<name>' (what a
perfect model of that output scores: 8-bit mu-law alone costs log-mel L1 and MR-STFT), and the
first clip of the model's and of Griffin-Lim's as audio ('vocoded', 'griffin_lim'); `baseline`
returns the Griffin-Lim and encoding figures alone (they do not depend on the model). Every process takes part in gathering the parameters; process 0
vocodes.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data import audio as audio_lib
from data import spectral
from data import specs
from experiments import evaluators
from experiments import metrics as metrics_lib
from experiments import sharding
from experiments import state as state_lib


_MEL_KEYS = ('sr', 'n_fft', 'hop_length', 'win_length', 'window', 'n_mels', 'fmin', 'fmax',
             'htk', 'norm', 'power', 'floor')  # specs.mel_kwargs: static, so jit caches


@functools.partial(jax.jit, static_argnames=('samples', 'n_iter') + _MEL_KEYS)
def _griffin_lim(mel, seed, *, samples, n_iter, sr, n_fft, hop_length, win_length, window,
                 n_mels, fmin, fmax, htk, norm, power, floor):
  del n_mels, floor  # the mel's own width; exp() undoes the log, floored values included
  linear = spectral.mel_to_stft(jnp.exp(jnp.swapaxes(mel, -1, -2)), sr=sr, n_fft=n_fft,
                                power=power, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
  return spectral.griffin_lim(linear, n_iter=n_iter, hop_length=hop_length,
                              win_length=win_length, n_fft=n_fft, window=window,
                              length=samples, random_state=seed)


def griffin_lim(mel: np.ndarray, input_config: ml_collections.ConfigDict, samples: int,
                n_iter: int, seed: int) -> np.ndarray:
  """The Griffin-Lim reconstruction [B, samples] of 'mel' frames [B, F, M] of `input_config`."""
  return np.asarray(_griffin_lim(jnp.asarray(mel, jnp.float32), jnp.int32(seed),
                                 samples=samples, n_iter=n_iter,
                                 **specs.mel_kwargs(input_config)))


_spectral_distances = jax.jit(spectral.spectral_distances, static_argnames=_MEL_KEYS)


def distances(y_hat: np.ndarray, y: np.ndarray,
              input_config: ml_collections.ConfigDict) -> dict[str, float]:
  """data.spectral.spectral_distances of y_hat [B, T] to y [B, T], averaged over B."""
  d = _spectral_distances(jnp.asarray(y_hat, jnp.float32), jnp.asarray(y, jnp.float32),
                          **specs.mel_kwargs(input_config))
  return {k: float(np.mean(v)) for k, v in jax.device_get(d).items()}


class Evaluator:
  """Spectral distances of the model's vocoding and of Griffin-Lim's, on the same mels."""

  def __init__(self, context, split: str = 'validation', clips: int = 8, seconds: float = 2.0,
               griffin_lim_iters: int = 64, temperature: float = 1.0):
    if 'mel' not in context.model.conditions:
      raise ValueError(f'config.evals (type spectral): the model reads {context.model.conditions}'
                       ", not 'mel' (set config.model's mel conditioning)")
    if clips < 1 or seconds <= 0:
      raise ValueError(f'config.evals (type spectral): clips={clips}, seconds={seconds}: '
                       'expected at least one clip of positive length')
    self.context, self.split, self.clips = context, split, clips
    self.griffin_lim_iters, self.temperature = griffin_lim_iters, temperature
    inp = context.config.input
    self.rate = specs.sample_rate(inp)
    hop = specs.dataset(inp.dataset).hop_length
    segment = specs.dataset(inp.dataset).segment_samples
    self.samples = min(segment, -(-int(round(seconds * self.rate)) // hop) * hop)
    self._data, self._griffin_lim = None, None

  def _references(self) -> tuple[np.ndarray, dict]:
    """(reference audio [clips, T], conditioning {key: [clips, ...]}), read once."""
    if self._data is None:
      batch = evaluators.first_segments(self.context.config, self.split, self.clips,
                                        self.samples, encoding='float')
      self._data = (batch['audio'], {k: batch[k] for k in self.context.model.conditions})
    return self._data

  def baseline(self) -> dict:
    """Griffin-Lim's figures as 'griffin_lim_<name>', the encoded reference's as
    'encoded_<name>' (computed once)."""
    if self._griffin_lim is None:
      inp = self.context.config.input
      reference, cond = self._references()
      wave = griffin_lim(cond['mel'], inp, self.samples, self.griffin_lim_iters,
                         self.context.config.seed)
      figures = {f'griffin_lim_{k}': v for k, v in distances(wave, reference, inp).items()}
      encoded = audio_lib.decode(audio_lib.encode(reference, inp.encoding, inp.bits),
                                 inp.encoding, inp.bits)
      figures.update({f'encoded_{k}': v for k, v in distances(encoded, reference, inp).items()})
      self._griffin_lim = (figures, wave[0])
    return dict(self._griffin_lim[0])

  def run(self, state: dict) -> dict:
    c = self.context
    if jax.process_index() != 0:
      sharding.to_host(state_lib.variables(state))  # a collective: every process joins
      return {}
    reference, cond = self._references()
    variables = sharding.to_host(state_lib.variables(state))
    rng = jax.random.fold_in(jax.random.key(c.config.seed + 2), 0)
    wave = np.concatenate(list(c.family.generate(
        c.model, variables, rng, self.samples, batch=len(reference), cond=cond,
        temperature=self.temperature)), axis=1)
    out = distances(wave, reference, c.config.input)
    out.update(self.baseline())
    out['vocoded'] = metrics_lib.Audio(wave[0], self.rate)
    out['griffin_lim'] = metrics_lib.Audio(self._griffin_lim[1], self.rate)
    return out
