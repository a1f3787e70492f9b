"""TensorBoard output (scalars, audio, spectrogram images) and progress lines, process 0 only."""

import dataclasses
import os
import time

from absl import logging
import jax
import numpy as np
import scipy.signal
import tensorboardX


@dataclasses.dataclass
class Audio:
  """A float wave [N] in [-1, 1] at `rate` Hz, as an evaluator's result."""
  wave: np.ndarray
  rate: int


class Writer:
  """A tensorboardX SummaryWriter under `logdir` on process 0; a no-op elsewhere."""

  def __init__(self, logdir: str):
    self._tb = None
    if jax.process_index() == 0:
      os.makedirs(logdir, exist_ok=True)
      self._tb = tensorboardX.SummaryWriter(logdir)

  def scalars(self, step: int, values: dict) -> None:
    if self._tb:
      for k, v in values.items():
        self._tb.add_scalar(k, float(v), step)
      self._tb.flush()

  def audio(self, step: int, name: str, wave: np.ndarray, sample_rate: int) -> None:
    """A float wave in [-1, 1], and its log spectrogram as an image."""
    if self._tb:
      self._tb.add_audio(name, np.clip(wave, -1, 1)[:, None], step, sample_rate=sample_rate)
      self._tb.add_image(f'{name}_spectrogram', spectrogram_image(wave), step,
                         dataformats='HW')
      self._tb.flush()

  def write(self, step: int, prefix: str, values: dict) -> None:
    """An evaluator's results: scalars as '<prefix>/<key>', Audio as '<prefix>' clips."""
    self.scalars(step, {f'{prefix}/{k}': v for k, v in values.items()
                        if not isinstance(v, Audio)})
    for k, v in values.items():
      if isinstance(v, Audio):
        self.audio(step, prefix if k == 'audio' else f'{prefix}/{k}', v.wave, v.rate)

  def close(self) -> None:
    if self._tb:
      self._tb.close()


def spectrogram_image(wave: np.ndarray, nfft: int = 512, floor_db: float = -80.) -> np.ndarray:
  """Log-magnitude STFT [freq, time] scaled to [0, 1], low frequencies at the bottom."""
  nfft = min(nfft, len(wave))
  _, _, z = scipy.signal.stft(wave, nperseg=nfft, noverlap=nfft * 3 // 4)
  db = 20 * np.log10(np.abs(z) + 1e-8)
  db = np.clip(db - db.max(), floor_db, 0.)
  return ((db - floor_db) / -floor_db)[::-1].astype(np.float32)


class Progress:
  """Steps/s and ETA between log steps."""

  def __init__(self, first_step: int, total_steps: int):
    self._t, self._step, self._total = time.perf_counter(), first_step, total_steps

  def __call__(self, step: int) -> dict:
    now = time.perf_counter()
    rate = (step - self._step) / max(now - self._t, 1e-9)
    self._t, self._step = now, step
    eta = (self._total - step) / rate if rate > 0 else float('inf')
    return {'steps_per_s': rate, 'eta_s': eta}


def log_line(step: int, total: int, values: dict) -> None:
  text = ' '.join(f'{k}={v:.4g}' for k, v in values.items())
  logging.info('step %d/%d %s', step, total, text)
