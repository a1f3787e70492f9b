r"""Audio from a checkpoint, written as 16-bit .wav files.

    python -m experiments.sample --workdir=/tmp/wn --num_samples=4 --seconds=10 --out=/tmp/wn/wav \
        [--step=N] [--temperature=1.0] [--seed=0] [--chunk_seconds=1] \
        [--prompt=piece.wav --prompt_seconds=2] [--midi=piece.mid] [--global_id=K]

Streams `num_samples` at once through the model's cached sampler (`models/<name>.generate`)
and appends each chunk of `chunk_seconds` to its file as it comes (soundfile in write mode), so
minutes of audio take the memory of one chunk. Prints progress and the realtime factor: seconds
of audio per second of wall time, per stream (the first chunk includes compilation).

  --prompt    a wav (any rate, mixed to mono, resampled to the model's rate with soxr, cut to
              --prompt_seconds, encoded like the training data) that every stream continues; the
              file holds the prompt as the model saw it (quantised codes, decoded) and then the
              continuation.
  --midi      a MIDI file for a MIDI-conditioned model: its pianoroll, onsets and velocities on
              the model's frame grid (data/midi.py), scaled and ordered by train.model_inputs as
              in training, covering prompt and continuation (both start at the MIDI's time 0).
              --seconds defaults to the MIDI's length less the prompt.

Files: <out>/step<step>_seed<seed>_<i>.wav, i = 0..num_samples-1. Launched as several
processes (launch/local.sh, SLURM, a TPU pod), each process samples a contiguous slice of the
files, and the files are the same as one process would write.
"""

from collections.abc import Iterator
import os
import time

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np
import soundfile as sf

from data import audio as audio_lib
from data import midi as midi_lib
from data import pipeline
from experiments import checkpoint
from experiments import distributed
from experiments import train


def encode(input_config: ml_collections.ConfigDict, wave: np.ndarray) -> np.ndarray:
  """Float audio in [-1, 1] -> int32 codes, as the input pipeline encodes training audio."""
  if input_config.encoding in ('mu_law', 'linear'):
    return pipeline.encode(wave, input_config.encoding, input_config.bits)
  raise ValueError(f'config.input.encoding={input_config.encoding!r}: sampling needs coded audio '
                   "('mu_law' or 'linear')")


def load_prompt(config: ml_collections.ConfigDict, path: str,
                seconds: float | None = None) -> np.ndarray:
  """A wav file as the codes [P] of the model's rate and encoding; the first `seconds` of it.

  Raises:
    AudioError: the file is missing or does not decode.
  """
  wave, rate = audio_lib.read_audio(path)  # [N] mono
  if seconds is not None:
    wave = wave[:int(round(seconds * rate))]
  wave = audio_lib.resample(wave, rate, train.sample_rate(config))
  if not len(wave):
    raise audio_lib.AudioError(f'{path}: the prompt holds no samples (--prompt_seconds={seconds})')
  return encode(config.input, wave)


def midi_features(config: ml_collections.ConfigDict, model, path: str,
                  num_samples: int) -> np.ndarray:
  """Local conditioning [1, F, D] of a MIDI file covering `num_samples` samples from its time 0.

  Raises:
    MidiError: the file is missing, does not parse or holds no notes.
  """
  notes = midi_lib.load_notes(path)
  frames = midi_lib.frame_features(notes, -(-num_samples // model.hop_length), model.hop_length,
                                   train.sample_rate(config))
  unknown = [k for k in config.local_features if k not in frames]
  if unknown:
    raise ValueError(f'config.local_features={tuple(config.local_features)}: {unknown} do not '
                     f'come from MIDI (expected a subset of {tuple(frames)})')
  batch = {'audio': np.zeros((1, 1), np.int32), **{k: v[None] for k, v in frames.items()}}
  return np.asarray(train.model_inputs(config, batch)['local'])  # [1, F, D]


def midi_seconds(path: str) -> float:
  """The length of a MIDI file: the end of its last note (sustain included)."""
  return midi_lib.load_notes(path).end_time


def generate_audio(config: ml_collections.ConfigDict, model, params: dict, rng: jax.Array,
                   num_streams: int, num_samples: int, prompt: np.ndarray | None = None,
                   local: np.ndarray | None = None, global_id: int | None = None,
                   temperature: float = 1.0, chunk_samples: int = 16000,
                   first_stream: int = 0) -> Iterator[np.ndarray]:
  """Yields float audio chunks [B, <= chunk_samples] of `num_samples` new samples per stream.

  Args:
    config, model, params: the saved config, its model and parameters (e.g. checkpoint.load).
    rng: PRNG key of the draws.
    num_streams: B, independent streams.
    prompt: codes [P] every stream continues (not yielded); None: from silence.
    local: frame features [1, F, D] covering prompt and continuation (e.g. `midi_features`).
    global_id: the id of a globally conditioned model.
    temperature, chunk_samples, first_stream: as models/<name>.generate.
  """
  kwargs = {}
  if prompt is not None:
    kwargs['prompt'] = np.repeat(np.asarray(prompt, np.int32)[None], num_streams, axis=0)
  if local is not None:
    kwargs['local'] = np.repeat(np.asarray(local, np.float32), num_streams, axis=0)
  if global_id is not None:
    kwargs['global_ids'] = np.full((num_streams,), global_id, np.int32)
  module = train.model_module(config)
  for codes in module.generate(model, {'params': params}, rng, num_samples, batch=num_streams,
                               temperature=temperature, chunk_samples=chunk_samples,
                               first_stream=first_stream, **kwargs):
    yield train.decode(config.input, codes)  # [B, n]


def _check_conditioning(config, workdir: str, midi: str | None, global_id: int | None) -> None:
  if midi is not None and not config.local_features:
    raise ValueError(f'--midi={midi}: the model in {workdir} is not MIDI-conditioned '
                     '(config.local_features is empty)')
  if midi is None and config.local_features:
    raise ValueError(f'{workdir}: the model is conditioned on '
                     f'{tuple(config.local_features)}; pass --midi=file.mid')
  if global_id is not None and not config.global_key:
    raise ValueError(f'--global_id={global_id}: the model in {workdir} is not globally '
                     'conditioned (config.global_key is None)')
  if global_id is None and config.global_key:
    n = config.model.num_global
    raise ValueError(f'{workdir}: the model is conditioned on {config.global_key!r}; pass '
                     f'--global_id in 0..{n - 1}')
  if global_id is not None and not 0 <= global_id < config.model.num_global:
    raise ValueError(f'--global_id={global_id}: expected 0..{config.model.num_global - 1}')


def sample(workdir: str, num_samples: int, seconds: float | None, out_dir: str,
           step: int | None = None, temperature: float = 1.0, prompt: str | None = None,
           prompt_seconds: float | None = None, midi: str | None = None, seed: int = 0,
           chunk_seconds: float = 1.0, global_id: int | None = None) -> list[str]:
  """Writes `num_samples` wav files of `seconds` of new audio each (module docstring).

  Args:
    workdir: the training run; its checkpoint `step` (default the latest) is used.
    num_samples: files (streams sampled together).
    seconds: new audio per file, after the prompt; None: the MIDI's length less the prompt.
    out_dir: where the files go (created).
    step, temperature, seed: which checkpoint, and how to draw.
    prompt, prompt_seconds: a wav to continue, and how much of it.
    midi: a MIDI file for a MIDI-conditioned model.
    chunk_seconds: audio per compiled sampler call and per write.
    global_id: the id of a globally conditioned model.

  Returns:
    The paths of the files this process wrote (all of them in a single process).

  Raises:
    FileNotFoundError: no checkpoint; AudioError / MidiError: a bad prompt or MIDI file;
    ValueError: conditioning that does not fit the model, or bad lengths.
  """
  if num_samples < 1:
    raise ValueError(f'--num_samples={num_samples}: expected at least 1')
  state, config = checkpoint.load(workdir, step)
  step = int(state['step'])
  _check_conditioning(config, workdir, midi, global_id)
  model = train.create_model(config)
  rate = train.sample_rate(config)
  codes = None if prompt is None else load_prompt(config, prompt, prompt_seconds)  # [P]
  n_prompt = 0 if codes is None else len(codes)
  if seconds is None:
    if midi is None:
      raise ValueError('--seconds is required without --midi')
    end = midi_seconds(midi)
    if end <= n_prompt / rate:
      raise ValueError(f'--midi={midi} ends at {end:.2f} s, before the {n_prompt / rate:.2f} s '
                       'prompt does: pass --seconds')
    seconds = end - n_prompt / rate
  n = int(round(seconds * rate))
  if n < 1:
    raise ValueError(f'--seconds={seconds}: expected at least one sample of new audio')
  # Without a prompt the sampler starts from one silent code at position 0 (not written).
  local = None if midi is None else midi_features(config, model, midi, max(n_prompt, 1) + n)
  chunk = max(1, int(round(chunk_seconds * rate)))
  os.makedirs(out_dir, exist_ok=True)
  # Processes share the files: each samples a contiguous slice of the streams, numbered as one
  # process would number them, so the files do not depend on the process count.
  lo, hi = np.linspace(0, num_samples, jax.process_count() + 1).astype(int)[
      jax.process_index():jax.process_index() + 2]
  paths = [os.path.join(out_dir, f'step{step}_seed{seed}_{i:03d}.wav') for i in range(lo, hi)]
  say = print if distributed.is_main() else lambda *a, **k: None
  say(f'{workdir} step {step}: {num_samples} x {n / rate:.2f} s at {rate} Hz'
      + (f' after a {n_prompt / rate:.2f} s prompt' if n_prompt else '')
      + (f', conditioned on {midi}' if midi else '')
      + (f', over {jax.process_count()} processes' if jax.process_count() > 1 else ''),
      flush=True)
  if lo < hi:
    _write(config, model, state['params'], paths, n, codes, local, global_id, temperature,
           seed, chunk, lo, say)
  distributed.sync('sample')
  return paths


def _write(config, model, params, paths, n, codes, local, global_id, temperature, seed, chunk,
           first_stream, say) -> None:
  """Streams the files `paths` (streams first_stream, ...) chunk by chunk."""
  rate = train.sample_rate(config)
  files = [sf.SoundFile(p, 'w', samplerate=rate, channels=1, subtype='PCM_16', format='WAV')
           for p in paths]
  try:
    if codes is not None:
      head = audio_lib.to_int16(train.decode(config.input, codes))
      for f in files:
        f.write(head)
    t0 = t = time.perf_counter()
    done = 0
    for wave in generate_audio(config, model, params, jax.random.key(seed), len(paths), n,
                               codes, local, global_id, temperature, chunk,
                               first_stream):  # [B, c]
      for f, w in zip(files, wave):
        f.write(audio_lib.to_int16(w))
      now = time.perf_counter()
      done += wave.shape[1]
      say(f'  {done / rate:7.2f} / {n / rate:.2f} s  {wave.shape[1] / (now - t):8.0f} samples/s '
          f'per stream  realtime factor {wave.shape[1] / (now - t) / rate:.3f}', flush=True)
      t = now
    total = time.perf_counter() - t0
    say(f'{len(paths)} x {n / rate:.2f} s in {total:.1f} s: realtime factor '
        f'{n / total / rate:.3f} per stream, {len(paths) * n / total / rate:.3f} in all',
        flush=True)
  finally:
    for f in files:
      f.close()


def define_flags() -> None:
  """The job's flags, defined only when it runs as a program (see experiments/evaluate.py)."""
  flags.DEFINE_string('workdir', None, 'The training run to sample from.')
  flags.DEFINE_integer('num_samples', 1, 'Files (streams sampled together).')
  flags.DEFINE_float('seconds', None, 'New audio per file; default the MIDI length with --midi.')
  flags.DEFINE_string('out', None, 'Output directory.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_float('temperature', 1.0, 'Sampling temperature.')
  flags.DEFINE_string('prompt', None, 'A wav file to continue.')
  flags.DEFINE_float('prompt_seconds', None, 'Use this much of the prompt; default all of it.')
  flags.DEFINE_string('midi', None, 'MIDI file for a MIDI-conditioned model.')
  flags.DEFINE_integer('global_id', None, 'The id of a globally conditioned model.')
  flags.DEFINE_integer('seed', 0, 'PRNG seed.')
  flags.DEFINE_float('chunk_seconds', 1.0, 'Audio per sampler call and per write.')


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if f.workdir is None or f.out is None:
    raise app.UsageError('--workdir and --out are required')
  try:
    distributed.initialize()
    sample(f.workdir, f.num_samples, f.seconds, f.out, f.step, f.temperature, f.prompt,
           f.prompt_seconds, f.midi, f.seed, f.chunk_seconds, f.global_id)
  except (FileNotFoundError, ValueError) as e:  # AudioError and MidiError are ValueErrors
    raise SystemExit(f'sample: {e}') from None
  distributed.shutdown()


if __name__ == '__main__':
  define_flags()
  app.run(main)
