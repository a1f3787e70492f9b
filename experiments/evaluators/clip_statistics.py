"""How far an unconditional model's clips are from the data, by their spectrogram statistics.

    config.evals.statistics = dict(type='clip_statistics', every_steps=500, split='validation',
                                   clips=32, seconds=1.024)

`clips` streams of `seconds` are drawn with the family's `generate` (key fold_in(key(config.seed
+ 3), 0)), and the first `clips` segments of `split` are cropped to their first `seconds`. Each
is turned into log-mel frames (data.spectral.log_mel_spectrogram: 1,024-sample windows, hop
256, 64 mels over 0 to sr / 2, floor 1e-5, natural log) and both sets of frames are compared:

    mel_frechet       the Frechet distance of Gaussians fitted to the two sets of log-mel frame
                      vectors, |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2) (the Frechet
                      Audio Distance's formula on log-mel frames instead of VGGish embeddings);
                      0 for identical statistics
    mean_spectrum_l1  the mean over bands of |mean log-mel of the clips - that of the data|,
                      nats
    level_db          the clips' RMS level minus the data's, dB

`baseline()` gives the same figures for white noise at the data's RMS level (what a model
that learned only loudness scores). Process 0 draws; every process gathers the parameters.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from data import spectral
from data import specs
from experiments import evaluators
from experiments import metrics as metrics_lib
from experiments import sharding
from experiments import state as state_lib

N_FFT, HOP, N_MELS, FLOOR = 1024, 256, 64, 1e-5


@functools.partial(jax.jit, static_argnames=('sr',))
def _frames(audio: jax.Array, sr: int) -> jax.Array:
  mel = spectral.log_mel_spectrogram(audio, FLOOR, sr=sr, n_fft=N_FFT, hop_length=HOP,
                                     n_mels=N_MELS, power=1.0)  # [B, mels, F]
  return jnp.swapaxes(mel, 1, 2).reshape(-1, N_MELS)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
  """The Frechet distance of Gaussians fitted to the rows of a [N, D] and b [M, D]."""
  mu_a, mu_b = a.mean(0), b.mean(0)
  s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(s_a @ s_b)
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * np.real(root)))


def compare(clips: np.ndarray, data: np.ndarray, sr: int) -> dict[str, float]:
  """The figures (module docstring) of float clips [B, T] against data [B', T]."""
  fa = np.asarray(_frames(jnp.asarray(clips, jnp.float32), sr), np.float64)
  fb = np.asarray(_frames(jnp.asarray(data, jnp.float32), sr), np.float64)
  rms = lambda x: np.sqrt(np.mean(np.square(x)) + 1e-12)
  return {'mel_frechet': frechet(fa, fb),
          'mean_spectrum_l1': float(np.mean(np.abs(fa.mean(0) - fb.mean(0)))),
          'level_db': float(20 * np.log10(rms(clips) / rms(data)))}


class Evaluator:
  """Spectrogram statistics of generated clips against the data's."""

  def __init__(self, context, split: str = 'validation', clips: int = 32,
               seconds: float = 1.024):
    if clips < 2 or seconds <= 0:
      raise ValueError(f'config.evals (type clip_statistics): clips={clips}, seconds={seconds}: '
                       'expected at least 2 clips of positive length')
    self.context, self.split, self.clips = context, split, clips
    self.rate = specs.sample_rate(context.config.input)
    segment = specs.dataset(context.config.input.dataset).segment_samples
    self.samples = min(segment, int(round(seconds * self.rate)))
    self._data = None

  def data(self) -> np.ndarray:
    """The reference crops [clips, samples], read once."""
    if self._data is None:
      self._data = evaluators.first_segments(self.context.config, self.split, self.clips,
                                             self.samples, encoding='float',
                                             frame_features=())['audio']
    return self._data

  def baseline(self) -> dict:
    data = self.data()
    level = np.sqrt(np.mean(np.square(data)))
    noise = np.random.default_rng(self.context.config.seed).normal(0, level, data.shape)
    return {f'noise_{k}': v for k, v in compare(noise, data, self.rate).items()}

  def run(self, state: dict) -> dict:
    c = self.context
    if jax.process_index() != 0:
      sharding.to_host(state_lib.variables(state))  # a collective: every process joins
      return {}
    variables = sharding.to_host(state_lib.variables(state))
    rng = jax.random.fold_in(jax.random.key(c.config.seed + 3), 0)
    wave = np.concatenate(list(c.family.generate(c.model, variables, rng, self.samples,
                                                 batch=self.clips)), axis=1)
    out = compare(wave, self.data(), self.rate)
    out.update(self.baseline())
    out['clip'] = metrics_lib.Audio(wave[0], self.rate)
    return out
