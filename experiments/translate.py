r"""Translate a wav to another instrument with a trained translator (models/__init__.py, kind
'translator': models/umt, models/blow).

    python -m experiments.translate --workdir=/tmp/umt --audio=in.wav --to=harpsichord \
        --out=out.wav [--from=piano] [--step=N] [--seconds=S] [--temperature=1.0] [--seed=0]

The wav (any rate, mixed to mono, resampled to the model's rate with soxr; its first `seconds`
if given) is translated whole, from the instrument `--from` (Blow encodes with it; the UMT's
encoder is instrument-agnostic and ignores it) to `--to`, both names of data.specs.INSTRUMENTS,
with the key fold_in(key(seed), 0). The result is written as 16-bit PCM at the model's rate,
first to <out>.partial and renamed when complete. Runs in one process.
"""

import os

from absl import app
from absl import flags
import jax
import numpy as np
import soundfile as sf

from data import audio as audio_lib
from data import specs
from experiments import runtime
from experiments import sample as sample_lib


def _instrument(name: str, flag: str) -> int:
  if name not in specs.INSTRUMENTS:
    raise ValueError(f'--{flag}={name!r}: expected one of {", ".join(specs.INSTRUMENTS)}')
  return specs.INSTRUMENTS.index(name)


def translate(workdir: str, audio: str, to: str, out: str | None = None, source: str = 'piano',
              step: int | None = None, seconds: float | None = None,
              temperature: float = 1.0, seed: int = 0) -> np.ndarray:
  """The wav `audio` played by the instrument `to`, by the translator of `workdir` (its
  checkpoint `step`, default the latest): float32 [T] at the model's rate, written to `out`
  if given.

  Raises:
    FileNotFoundError: no checkpoint; AudioError: a missing or undecodable wav;
    ValueError: an unknown instrument, a run that is not a translator, or an unwritable `out`.
  """
  target, origin = _instrument(to, 'to'), _instrument(source, 'from')
  config, family, model, variables = sample_lib.load_run(
      workdir, step, 'translate', 'translator (a model with `translate`, e.g. umt or blow)', out)
  wave = sample_lib.load_prompt(config, audio, seconds)  # [T] at the model's rate
  rng = jax.random.fold_in(jax.random.key(seed), 0)
  y = family.translate(model, variables, rng, wave[None], np.array([origin], np.int32),
                       np.array([target], np.int32), temperature=temperature)
  y = np.asarray(y[0], np.float32)
  if out is not None:
    partial = f'{out}.partial'
    sf.write(partial, audio_lib.to_int16(y), specs.sample_rate(config.input), subtype='PCM_16',
             format='WAV')
    os.replace(partial, out)
  return y


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if f.workdir is None or f.audio is None or f.to is None or f.out is None:
    raise app.UsageError('--workdir, --audio, --to and --out are required')
  with runtime.one_line_errors('translate'):
    y = translate(f.workdir, f.audio, f.to, f.out, getattr(f, 'from'), f.step, f.seconds,
                  f.temperature, f.seed)
  print(f'{f.audio} ({getattr(f, "from")}) -> {f.out} ({f.to}): {len(y)} samples, peak '
        f'{float(np.abs(y).max()) if len(y) else 0.0:.3f}')


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'The translator\'s training run.')
  flags.DEFINE_string('audio', None, 'The wav file to translate.')
  flags.DEFINE_string('to', None, f'The target instrument: one of {", ".join(specs.INSTRUMENTS)}.')
  flags.DEFINE_string('from', 'piano', 'The instrument of the input.')
  flags.DEFINE_string('out', None, 'The wav file to write.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_float('seconds', None, 'Translate the first this many seconds; default all.')
  flags.DEFINE_float('temperature', 1.0, 'Sampling temperature of the translator.')
  flags.DEFINE_integer('seed', 0, 'Seed of the translation\'s draws.')
  app.run(main)
