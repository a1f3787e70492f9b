r"""Vocode a wav with a mel-conditioned model, next to Griffin-Lim on the same mel.

    python -m experiments.resynthesize --workdir=/tmp/wnmel --wav=held_out.wav \
        [--out=DIR] [--seconds=4] [--step=N] [--seed=0] [--temperature=1.0] \
        [--griffin_lim_iters=64]

The wav (any rate, mixed to mono, resampled to the model's rate with soxr, cut to --seconds)
is the reference. Its 'mel' frames are computed as the training data's are
(data/pipeline.py, `mel_features`, with config.input.mel); the model's `generate` vocodes
them, and data.spectral's Griffin-Lim reconstructs the same frames (experiments/evaluators/
spectral.py, `griffin_lim`). Writes, in --out (default <workdir>/resynthesis):

    <name>.reference.wav  <name>.vocoded.wav  <name>.griffin_lim.wav
    <name>.json           the spectral distances of both to the reference (log-mel L1,
                          multi-resolution STFT, magnitude SNR; see experiments/evaluators/
                          spectral.py), with the step and settings

and prints the distances. Runs in one process.
"""

import json
import os

from absl import app
from absl import flags
import jax
import numpy as np
import soundfile as sf

from data import audio as audio_lib
from data import pipeline
from data import specs
from experiments import checkpoint
from experiments import runtime
from experiments import sample as sample_lib
from experiments import state as state_lib
from experiments.evaluators import spectral as spectral_eval
import models


def resynthesize(workdir: str, wav: str, out_dir: str | None = None,
                 seconds: float | None = None, step: int | None = None, seed: int = 0,
                 temperature: float = 1.0, griffin_lim_iters: int = 64) -> dict:
  """Writes the reference, vocoded and Griffin-Lim wavs of `wav` and their distances; returns
  {'vocoded': {...}, 'griffin_lim': {...}, 'files': [...]}.

  Raises:
    FileNotFoundError: no checkpoint; AudioError: a missing or undecodable wav;
    ValueError: a model that is not conditioned on 'mel'.
  """
  state, config = checkpoint.load(workdir, step, keys=state_lib.VARIABLE_KEYS)
  step = int(state['step'])
  model = models.create(config)
  if tuple(model.conditions) != ('mel',):
    raise ValueError(f'{workdir}: the model reads {tuple(model.conditions)}; resynthesis needs '
                     "a model conditioned on 'mel' alone (e.g. experiments/configs/wavenet.py:mel)")
  rate = specs.sample_rate(config.input)
  reference = sample_lib.load_prompt(config, wav, seconds)  # [T] at the model's rate
  n = len(reference)
  mel = np.asarray(pipeline.mel_features(reference[None], config.input))  # [1, F, M]
  family = models.family(config.model_name)
  variables = state_lib.variables(state)
  vocoded = np.concatenate(list(family.generate(
      model, variables, jax.random.key(seed), n, batch=1, cond={'mel': mel},
      temperature=temperature)), axis=1)
  gl = spectral_eval.griffin_lim(mel, config.input, n, griffin_lim_iters, seed)
  result = {'vocoded': spectral_eval.distances(vocoded, reference[None], config.input),
            'griffin_lim': spectral_eval.distances(gl, reference[None], config.input)}

  out_dir = out_dir or os.path.join(workdir, 'resynthesis')
  os.makedirs(out_dir, exist_ok=True)
  name = os.path.splitext(os.path.basename(wav))[0]
  files = []
  for kind, wave in (('reference', reference), ('vocoded', vocoded[0]), ('griffin_lim', gl[0])):
    path = os.path.join(out_dir, f'{name}.{kind}.wav')
    sf.write(path, audio_lib.to_int16(np.clip(wave, -1, 1)), rate, subtype='PCM_16')
    files.append(path)
  info = dict(result, wav=wav, step=step, seconds=n / rate, seed=seed, temperature=temperature,
              griffin_lim_iters=griffin_lim_iters)
  with open(os.path.join(out_dir, f'{name}.json'), 'w') as f:
    json.dump(info, f, indent=1)
  print(f'{wav}: {n / rate:.2f} s at {rate} Hz, {workdir} step {step}')
  print(f'{"":14s}{"log-mel L1":>12s}{"MR-STFT":>10s}{"mag SNR dB":>12s}')
  for kind in ('vocoded', 'griffin_lim'):
    r = result[kind]
    print(f'{kind:14s}{r["log_mel_l1"]:12.3f}{r["mr_stft"]:10.3f}{r["magnitude_snr"]:12.2f}')
  result['files'] = files
  return result


def define_flags() -> None:
  """The job's flags, defined only when it runs as a program (see experiments/evaluate.py)."""
  flags.DEFINE_string('workdir', None, 'The training run of a mel-conditioned model.')
  flags.DEFINE_string('wav', None, 'The wav to resynthesize (e.g. a held-out piece).')
  flags.DEFINE_string('out', None, 'Output directory; default <workdir>/resynthesis.')
  flags.DEFINE_float('seconds', None, 'Use the first this many seconds; default all.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_integer('seed', 0, 'PRNG seed of the vocoder and of the Griffin-Lim phase.')
  flags.DEFINE_float('temperature', 1.0, 'Sampling temperature of the vocoder.')
  flags.DEFINE_integer('griffin_lim_iters', 64, 'Griffin-Lim iterations.')


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if f.workdir is None or f.wav is None:
    raise app.UsageError('--workdir and --wav are required')
  with runtime.one_line_errors('resynthesize'):
    resynthesize(f.workdir, f.wav, f.out, f.seconds, f.step, f.seed, f.temperature,
                 f.griffin_lim_iters)


if __name__ == '__main__':
  define_flags()
  app.run(main)
