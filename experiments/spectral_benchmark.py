"""`python -m experiments.benchmark --what=spectral`: data/spectral.py against librosa on the
same input, and the input pipeline's 'mel' feature on the device against librosa per crop
(experiments/benchmark.py's docstring says what each figure is)."""

from absl import logging
import jax
import numpy as np

from data import pipeline
from data import spectral
from data import specs
from experiments.configs import common


SAMPLE_RATE = 16000


def measure(seconds: float, batch: int, gl_batch: int, iterations: int, repeats: int,
            median_time) -> dict:
  """The figures of `benchmark --what=spectral` (experiments/benchmark.py's docstring);
  `median_time(fn, repeats)` times a call."""
  import librosa  # pylint: disable=g-import-not-at-top  (a test dependency)
  sr = SAMPLE_RATE
  n = int(round(seconds * sr))
  if min(n, batch, gl_batch, iterations) < 1 or gl_batch > batch:
    raise ValueError(f'spectral: bad sizes --spectral_seconds={seconds} --spectral_batch='
                     f'{batch} --spectral_gl_batch={gl_batch} --spectral_gl_iterations='
                     f'{iterations}')
  x = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, n)).astype(np.float32)
  n_fft, hop = 2048, 512
  magnitude = np.abs(librosa.stft(x[:gl_batch], n_fft=n_fft, hop_length=hop))
  # The pipeline's 'mel' feature of one batch of the mel-vocoder runlocal config: the batch's
  # int16 crops in context, on the device in one jitted call (what data/pipeline.py does),
  # against librosa crop by crop on the host (what a grain transform would do).
  inp = common.load('experiments/configs/wavenet.py:mel,runlocal').input
  kw = specs.mel_kwargs(inp)
  frames = inp.crop_samples // kw['hop_length']
  pcm = np.random.default_rng(1).integers(-16384, 16384, (batch, (frames - 1) * kw['hop_length']
                                                          + kw['n_fft']), dtype=np.int16)

  def mel_per_crop(p):
    for row in p:
      m = librosa.feature.melspectrogram(
          y=row.astype(np.float32) / 32768, sr=kw['sr'], n_fft=kw['n_fft'],
          hop_length=kw['hop_length'], n_mels=kw['n_mels'], power=kw['power'], center=False)
      np.log(np.maximum(m, kw['floor'])).T

  ops = {  # name: (settings, JAX, librosa, input, seconds per clip)
      'stft': (f'n_fft={n_fft} hop={hop} hann',
               lambda y: spectral.stft(y, n_fft, hop),
               lambda y: librosa.stft(y, n_fft=n_fft, hop_length=hop), x, seconds),
      'mel': (f'n_fft={n_fft} hop={hop} n_mels=128 power=2',
              lambda y: spectral.mel_spectrogram(y, sr, n_fft, hop, n_mels=128),
              lambda y: librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop,
                                                       n_mels=128), x, seconds),
      'cqt': (f'hop={hop} n_bins=84 fmin=C1',
              lambda y: spectral.cqt(y, sr, hop),
              lambda y: librosa.cqt(y, sr=sr, hop_length=hop), x, seconds),
      'griffin_lim': (f'n_fft={n_fft} hop={hop} n_iter={iterations} momentum=0.99',
                      lambda s: spectral.griffin_lim(s, iterations, hop, length=n),
                      lambda s: librosa.griffinlim(s, n_iter=iterations, hop_length=hop,
                                                   length=n, random_state=0), magnitude,
                      seconds),
      'pipeline_mel': (f'wavenet.py:mel,runlocal batch mel, {frames} frames per crop',
                       lambda p: pipeline.pcm_mel(p, inp),
                       mel_per_crop, pcm, inp.crop_samples / kw['sr']),
  }
  by_op = {}
  for name, (settings, ours, theirs, inputs, clip_s) in ops.items():
    clips = inputs.shape[0]
    fn, arg = jax.jit(ours), jax.device_put(inputs)
    run_jax = lambda fn=fn, arg=arg: jax.block_until_ready(fn(arg))
    run_librosa = lambda theirs=theirs, inputs=inputs: theirs(inputs)
    run_jax()  # compile + warm-up
    run_librosa()  # librosa's caches (filters, numba)
    jax_s, librosa_s = median_time(run_jax, repeats), median_time(run_librosa, repeats)
    audio_s = clips * clip_s
    by_op[name] = {'settings': settings, 'clips': clips, 'audio_s': audio_s, 'jax_s': jax_s,
                   'librosa_s': librosa_s, 'jax_audio_s_per_s': audio_s / jax_s,
                   'librosa_audio_s_per_s': audio_s / librosa_s,
                   'jax_over_librosa': librosa_s / jax_s}
    logging.info('spectral %s: jax %.4f s, librosa %.4f s', name, jax_s, librosa_s)
  return {'spectral_sample_rate': sr, 'spectral_seconds': seconds, 'spectral_batch': batch,
          'spectral_gl_batch': gl_batch, 'spectral_gl_iterations': iterations,
          'spectral_repeats': repeats, 'librosa': librosa.__version__,
          'spectral': by_op}


def table(by_op: dict) -> str:
  """The spectral figures as a fixed-width table, one row per op."""
  rows = [f'{"op":<12}{"clips":>6}{"jax s":>10}{"librosa s":>11}{"jax audio s/s":>15}'
          f'{"librosa audio s/s":>19}{"jax/librosa":>13}']
  for name, r in by_op.items():
    rows.append(f'{name:<12}{r["clips"]:>6}{r["jax_s"]:>10.4f}{r["librosa_s"]:>11.4f}'
                f'{r["jax_audio_s_per_s"]:>15.1f}{r["librosa_audio_s_per_s"]:>19.1f}'
                f'{r["jax_over_librosa"]:>13.2f}')
  return '\n'.join(rows)
