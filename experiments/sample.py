r"""Audio from a checkpoint, written as 16-bit .wav files.

    python -m experiments.sample --workdir=/tmp/wn --num_samples=4 --seconds=10 --out=/tmp/wn/wav \
        [--step=N] [--temperature=1.0] [--seed=0] [--chunk_seconds=1] \
        [--prompt=piece.wav --prompt_seconds=2] [--midi=piece.mid] [--mel_from=piece.wav] \
        [--mel=frames.npy] [--global_id=K] [--temperatures=0.9,1,1,1]

Streams `num_samples` at once through the family's `generate` (models/__init__.py: float
audio chunks, the same call for every family) and appends each chunk of `chunk_seconds` to its
file as it comes (soundfile in write mode), so minutes of audio take the memory of one chunk.
Prints progress and the realtime factor: seconds of audio per second of wall time, per stream
(the first chunk includes compilation).

  --prompt    a wav (any rate, mixed to mono, resampled to the model's rate with soxr, cut to
              --prompt_seconds) that every stream continues; the file holds the prompt as the
              model saw it (through the training data's encoding and back) and then the
              continuation.
  --midi      a MIDI file for a model conditioned on frame features (`Model.conditions`): its
              pianoroll, onsets and velocities on the dataset's frame grid (data/midi.py),
              covering prompt and continuation (both start at the MIDI's time 0), passed as the
              conditioning dict of batch keys; the family transforms them as in training.
              --seconds defaults to the MIDI's length less the prompt.
  --mel_from  a wav whose log-mel frames (config.input.mel, computed as the training data's)
              condition a mel vocoder (a model reading 'mel'), covering prompt and
              continuation; --seconds defaults to the wav's length less the prompt
              (experiments/resynthesize.py also scores the result against Griffin-Lim).
  --mel       saved log-mel frames instead: a .npy of float [F, n_mels] (or [1, F, n_mels])
              computed with config.input.mel at the dataset's hop (e.g. by an acoustic model).
  --global_id the id of a model conditioned on a key of global ids (e.g. 'instrument').
  --temperatures  one temperature per stage of a VQ-VAE hierarchy (models/vqvae_prior: the
              prior's first, then each level's decoder from the top), in place of
              --temperature. From a level's workdir (models/vqvae) the file holds the prompt,
              then the level's reconstruction of it (what the level's codes keep).

A model of performance events (kind 'symbolic', models/__init__.py: the Music Transformer)
draws events from scratch and renders them with the corpus's piano; its events are written
beside each wav as <name>.mid (it takes no --prompt: give events as a primer to its
`sample_events`).

Files: <out>/step<step>_seed<seed>_<i>.wav, i = 0..num_samples-1, each written as
<name>.partial and renamed once complete (a failed run leaves no finished-looking file); one
sampler per output directory at a time (a lock, runtime.exclusive). Launched as several
processes (launch/local.sh, SLURM, a TPU pod), each process samples a contiguous slice of the
files, and the files are the same as one process would write.
"""

from collections.abc import Iterator
import contextlib
import itertools
import math
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np
import soundfile as sf

from data import audio as audio_lib
from data import midi as midi_lib
from data import midi_events
from data import pipeline
from data import specs
from experiments import checkpoint
from experiments import distributed
from experiments import runtime
from experiments import state as state_lib
import models


def as_seen(input_config: ml_collections.ConfigDict, wave: np.ndarray) -> np.ndarray:
  """Float audio as the model sees it: through the training data's encoding and back."""
  return audio_lib.decode(audio_lib.encode(wave, input_config.encoding, input_config.bits),
                          input_config.encoding, input_config.bits)


def load_prompt(config: ml_collections.ConfigDict, path: str,
                seconds: float | None = None) -> np.ndarray:
  """A wav file as float audio [P] at the model's rate; the first `seconds` of it.

  Raises:
    AudioError: the file is missing or does not decode.
  """
  wave, rate = audio_lib.read_audio(path)  # [N] mono
  if seconds is not None:
    wave = wave[:int(round(seconds * rate))]
  wave = audio_lib.resample(wave, rate, specs.sample_rate(config.input))
  if not len(wave):
    raise audio_lib.AudioError(f'{path}: the prompt holds no samples (--prompt_seconds={seconds})')
  return wave.astype(np.float32)


def _frame_keys(model) -> tuple[str, ...]:
  return tuple(k for k in model.conditions if k in specs.FRAME_FEATURES)


def _id_keys(model) -> tuple[str, ...]:
  return tuple(k for k in model.conditions if k not in specs.FRAME_FEATURES)


def midi_features(config: ml_collections.ConfigDict, model, path: str,
                  num_samples: int) -> dict:
  """The model's frame-feature conditioning {key: [1, F, 88]} of a MIDI file, covering
  `num_samples` samples from its time 0 on the dataset's frame grid.

  Raises:
    MidiError: the file is missing, does not parse or holds no notes.
  """
  notes = midi_lib.load_notes(path)
  hop = specs.dataset(config.input.dataset).hop_length
  frames = midi_lib.frame_features(notes, -(-num_samples // hop), hop,
                                   specs.sample_rate(config.input))
  unknown = [k for k in _frame_keys(model) if k not in frames]
  if unknown:
    raise ValueError(f'the model is conditioned on {unknown}, which do not come from MIDI '
                     f'(it gives {tuple(frames)})')
  return {k: frames[k][None] for k in _frame_keys(model)}


def wav_mel(config: ml_collections.ConfigDict, path: str) -> np.ndarray:
  """The 'mel' frames [1, F, n_mels] of a wav (any rate, resampled to the model's), frame f
  centred on its sample f hop, F = ceil(samples / hop).

  Raises:
    AudioError: the file is missing or does not decode.
  """
  wave = load_prompt(config, path)
  return np.asarray(pipeline.mel_features(wave[None], config.input))


def load_mel(config: ml_collections.ConfigDict, path: str) -> np.ndarray:
  """Saved log-mel frames [1, F, n_mels] from a .npy file of [F, n_mels] or [1, F, n_mels].

  Raises:
    FileNotFoundError: no such file; ValueError: not a float array of that shape.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'--mel={path}: no such file')
  try:
    mel = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f'--mel={path}: not a .npy array ({e})') from None
  width = config.input.mel.n_mels
  if mel.ndim == 2:
    mel = mel[None]
  if (mel.ndim != 3 or mel.shape[0] != 1 or mel.shape[2] != width or mel.shape[1] < 1
      or not np.issubdtype(mel.dtype, np.floating) or not np.all(np.isfinite(mel))):
    raise ValueError(f'--mel={path}: {mel.dtype} array of shape {mel.shape}; expected finite '
                     f'floats [frames, {width}] (config.input.mel.n_mels)')
  return mel.astype(np.float32)


# A note that sounds this long past the MIDI's last onset is taken for a stuck one.
STUCK_NOTE_SECONDS = 30.0


def midi_seconds(path: str) -> float:
  """The length of a MIDI file: the end of its last note (sustain included). A note that ends
  more than STUCK_NOTE_SECONDS after the last onset (a stuck note) is named in a warning."""
  notes = midi_lib.load_notes(path)
  last_onset = float(notes.onsets.max())
  i = int(np.argmax(notes.offsets))
  if notes.offsets[i] - last_onset > STUCK_NOTE_SECONDS:
    logging.warning('%s: note %d (key %d, on at %.2f s) sounds until %.1f s, %.0f s past the last '
                    'onset: a stuck note? The sample would last that long: pass --seconds to '
                    'cap it', path, i, notes.pitches[i], notes.onsets[i], notes.offsets[i],
                    notes.offsets[i] - last_onset)
  return notes.end_time


def check_flags(seconds: float | None, temperature: float | tuple[float, ...],
                 prompt_seconds: float | None) -> None:
  """One-line errors for lengths and a temperature (or per-stage temperatures) no sampler can
  use."""
  if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
    raise ValueError(f'--seconds={seconds}: expected a finite length > 0')
  if isinstance(temperature, tuple):
    if not all(math.isfinite(t) and t >= 0 for t in temperature):
      raise ValueError(f'--temperatures={",".join(map(str, temperature))}: expected finite '
                       'temperatures >= 0')
  elif not (math.isfinite(temperature) and temperature >= 0):
    raise ValueError(f'--temperature={temperature}: expected a finite temperature >= 0')
  if prompt_seconds is not None and not (math.isfinite(prompt_seconds) and prompt_seconds > 0):
    raise ValueError(f'--prompt_seconds={prompt_seconds}: expected a finite length > 0')


def generate_audio(config: ml_collections.ConfigDict, model, variables: dict, rng: jax.Array,
                   num_streams: int, num_samples: int, prompt: np.ndarray | None = None,
                   cond: dict | None = None, temperature: float = 1.0,
                   chunk_samples: int = 16000, first_stream: int = 0,
                   keep: dict | None = None) -> Iterator[np.ndarray]:
  """Yields float audio chunks [B, <= chunk_samples] of `num_samples` new samples per stream.

  Args:
    config, model, variables: the saved config, its model and variables (e.g. from
      checkpoint.load and experiments/state.variables).
    rng: PRNG key of the draws.
    num_streams: B, independent streams.
    prompt: float audio [P] every stream continues (not yielded); None: from silence.
    cond: conditioning of batch keys, each with a leading axis of 1 (e.g. `midi_features`,
      global ids [1]), repeated for every stream.
    temperature, chunk_samples, first_stream: as the family's `generate`.
    keep: a dict that receives what a symbolic family drew (its `generate`'s `keep`).
  """
  kwargs = {} if keep is None else {'keep': keep}
  if prompt is not None:
    kwargs['prompt'] = np.repeat(np.asarray(prompt, np.float32)[None], num_streams, axis=0)
  if cond:
    kwargs['cond'] = {k: np.repeat(np.asarray(v), num_streams, axis=0) for k, v in cond.items()}
  family = models.family(config.model_name)
  yield from family.generate(model, variables, rng, num_samples, batch=num_streams,
                             temperature=temperature, chunk_samples=chunk_samples,
                             first_stream=first_stream, **kwargs)  # [B, n]


def load_run(workdir: str, step: int | None, capability: str, kind: str, out: str | None = None):
  """(config, family, model, variables) of a run whose family exports `capability` (a `kind`,
  e.g. 'transcriber (a model with `transcribe`, e.g. onsets_frames)'), for the one-file jobs;
  first, that the file `out` (if given) can be written.

  Raises:
    FileNotFoundError: no checkpoint; ValueError: `out`'s directory is not writable, or the
    run's family lacks `capability`.
  """
  if out is not None:
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
      raise ValueError(f'--out={out}: {folder} is not a writable directory')
  state, config = checkpoint.load(workdir, step, keys=state_lib.VARIABLE_KEYS)
  family = models.family(config.model_name)
  if not hasattr(family, capability):
    raise ValueError(f'{workdir} holds a {config.model_name}, not a {kind}')
  return config, family, models.create(config), state_lib.variables(state)


def _check_conditioning(model, workdir: str, midi: str | None, global_id: int | None,
                        mel_from: str | None = None) -> None:
  frame_keys, id_keys = _frame_keys(model), _id_keys(model)
  midi_keys = tuple(k for k in frame_keys if k != 'mel')
  if midi is not None and not midi_keys:
    raise ValueError(f'--midi={midi}: the model in {workdir} is not conditioned on MIDI frame '
                     'features')
  if midi is None and midi_keys:
    raise ValueError(f'{workdir}: the model is conditioned on {midi_keys}; pass --midi=file.mid')
  if mel_from is not None and 'mel' not in frame_keys:
    raise ValueError(f'--mel_from={mel_from}: the model in {workdir} is not conditioned on mel')
  if mel_from is None and 'mel' in frame_keys:
    raise ValueError(f"{workdir}: the model is conditioned on 'mel'; pass --mel_from=file.wav "
                     'or --mel=frames.npy')
  if global_id is not None and not id_keys:
    raise ValueError(f'--global_id={global_id}: the model in {workdir} is not conditioned on '
                     'global ids')
  if global_id is None and id_keys:
    raise ValueError(f'{workdir}: the model is conditioned on {id_keys[0]!r}; pass --global_id')
  if len(id_keys) > 1:
    raise ValueError(f'{workdir}: the model reads several id keys {id_keys}; --global_id sets one')


def sample(workdir: str, num_samples: int, seconds: float | None, out_dir: str,
           step: int | None = None, temperature: float | tuple[float, ...] = 1.0,
           prompt: str | None = None,
           prompt_seconds: float | None = None, midi: str | None = None, seed: int = 0,
           chunk_seconds: float = 1.0, global_id: int | None = None,
           mel_from: str | None = None, mel: str | None = None) -> list[str]:
  """Writes `num_samples` wav files of `seconds` of new audio each (module docstring).

  Args:
    workdir: the training run; its checkpoint `step` (default the latest) is used.
    num_samples: files (streams sampled together).
    seconds: new audio per file, after the prompt; None: the MIDI's (or --mel_from wav's)
      length less the prompt.
    out_dir: where the files go (created).
    step, temperature, seed: which checkpoint, and how to draw; `temperature` a tuple: one
      per stage of a hierarchy (--temperatures).
    prompt, prompt_seconds: a wav to continue, and how much of it.
    midi: a MIDI file for a MIDI-conditioned model.
    chunk_seconds: audio per compiled sampler call and per write.
    global_id: the id of a globally conditioned model.
    mel_from: a wav whose mel conditions a mel vocoder.
    mel: saved mel frames (.npy) that condition a mel vocoder (instead of `mel_from`).

  Returns:
    The paths of the files this process wrote (all of them in a single process).

  Raises:
    FileNotFoundError: no checkpoint; AudioError / MidiError: a bad prompt or MIDI file;
    ValueError: conditioning that does not fit the model, or bad lengths.
  """
  if num_samples < 1:
    raise ValueError(f'--num_samples={num_samples}: expected at least 1')
  check_flags(seconds, temperature, prompt_seconds)
  state, config = checkpoint.load(workdir, step, keys=state_lib.VARIABLE_KEYS)
  step = int(state['step'])
  if not hasattr(models.family(config.model_name), 'generate'):
    raise ValueError(f'{workdir} holds a {config.model_name}, a transcriber: it draws no audio '
                     '(experiments/transcribe.py runs it on a wav)')
  model = models.create(config)
  if isinstance(temperature, tuple) and not hasattr(model, 'levels'):
    raise ValueError(f'--temperatures={",".join(map(str, temperature))}: per-stage temperatures '
                     f'are for VQ-VAE hierarchies; {workdir} holds a {config.model_name}: pass '
                     '--temperature')
  if mel_from is not None and mel is not None:
    raise ValueError(f'--mel_from={mel_from} and --mel={mel}: pass one')
  mel_source = mel_from if mel_from is not None else mel
  _check_conditioning(model, workdir, midi, global_id, mel_source)
  if prompt is not None and specs.is_events(config.input):
    raise ValueError(f'--prompt={prompt}: {workdir} holds a {config.model_name}, a model of MIDI '
                     'events; it continues no audio')
  rate = specs.sample_rate(config.input)
  wave = None if prompt is None else load_prompt(config, prompt, prompt_seconds)  # [P]
  n_prompt = 0 if wave is None else len(wave)
  mel_path, mel = mel, None
  if mel_from is not None:
    mel = wav_mel(config, mel_from)
  elif mel_path is not None:
    mel = load_mel(config, mel_path)
  if seconds is None:
    if midi is None and mel is None:
      raise ValueError('--seconds is required without --midi or --mel_from')
    source = midi if midi is not None else mel_source
    end = (midi_seconds(midi) if midi is not None else
           mel.shape[1] * specs.dataset(config.input.dataset).hop_length / rate)
    if end <= n_prompt / rate:
      raise ValueError(f'{source} ends at {end:.2f} s, before the {n_prompt / rate:.2f} s '
                       'prompt does: pass --seconds')
    seconds = end - n_prompt / rate
  n = int(round(seconds * rate))
  if n < 1:
    raise ValueError(f'--seconds={seconds}: expected at least one sample of new audio')
  # Without a prompt a code sampler starts from one silent code at position 0 (not written).
  cond = {} if midi is None else midi_features(config, model, midi, max(n_prompt, 1) + n)
  if mel is not None:
    cond['mel'] = mel  # frames past its end repeat its last one
  if global_id is not None:
    cond[_id_keys(model)[0]] = np.array([global_id], np.int32)
  chunk = max(1, int(round(chunk_seconds * rate)))
  try:
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
      raise PermissionError(13, 'not writable')
  except OSError as e:
    raise ValueError(f'--out={out_dir}: cannot write there ({e.strerror or e})') from None
  # Processes share the files: each samples a contiguous slice of the streams, numbered as one
  # process would number them, so the files do not depend on the process count.
  lo, hi = np.linspace(0, num_samples, jax.process_count() + 1).astype(int)[
      jax.process_index():jax.process_index() + 2]
  paths = [os.path.join(out_dir, f'step{step}_seed{seed}_{i:03d}.wav') for i in range(lo, hi)]
  say = print if distributed.is_main() else lambda *a, **k: None
  say(f'{workdir} step {step}: {num_samples} x {n / rate:.2f} s at {rate} Hz'
      + (f' after a {n_prompt / rate:.2f} s prompt' if n_prompt else '')
      + (f', conditioned on {midi}' if midi else '')
      + (f', conditioned on the mel of {mel_source}' if mel_source else '')
      + (f', over {jax.process_count()} processes' if jax.process_count() > 1 else ''),
      flush=True)
  if lo < hi:
    with runtime.exclusive(out_dir, 'sample', f'a sampler of {workdir}'):
      _write(config, model, state_lib.variables(state), paths, n, wave, cond, temperature, seed,
             chunk, lo, say)
  distributed.sync('sample')
  return paths


def _write(config, model, variables, paths, n, prompt, cond, temperature, seed, chunk,
           first_stream, say) -> None:
  """Streams the files `paths` (streams first_stream, ...) chunk by chunk, each into
  `<path>.partial`, renamed to `path` once complete: a run that fails (a full disk, a kill)
  leaves no file that looks finished, and removes its partial ones where it can."""
  rate = specs.sample_rate(config.input)
  t0 = t = time.perf_counter()
  drawn = {} if specs.is_events(config.input) else None  # a symbolic family's events
  waves = generate_audio(config, model, variables, jax.random.key(seed), len(paths), n, prompt,
                         cond, temperature, chunk, first_stream, drawn)  # [B, c] chunks
  # The first chunk before any file: a family that refuses the request (a prompt to a vocoder,
  # a mel too short) raises here and leaves no empty files behind.
  first = next(waves, None)
  partial = [f'{p}.partial' for p in paths]
  files = [sf.SoundFile(p, 'w', samplerate=rate, channels=1, subtype='PCM_16', format='WAV')
           for p in partial]
  complete = False
  try:
    if prompt is not None:
      head = audio_lib.to_int16(as_seen(config.input, prompt))
      for f in files:
        f.write(head)
    done = 0
    for wave in itertools.chain([] if first is None else [first], waves):
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
    for f in files:
      f.close()  # flushes: a full disk fails here, before any rename
    for events, p in zip((drawn or {}).get('events', ()), partial):
      midi_lib.write_midi(f'{p}.mid', midi_events.decode(events))
    complete = True
  finally:
    for f, p, final in zip(files, partial, paths):
      if complete:
        if drawn:
          os.replace(f'{p}.mid', final[:-len('.wav')] + '.mid')
        os.replace(p, final)
      else:
        with contextlib.suppress(Exception):  # the error that brought us here is the one to see
          f.close()
          os.remove(p)
        with contextlib.suppress(OSError):
          os.remove(f'{p}.mid')


def define_flags() -> None:
  """The job's flags, defined only when it runs as a program (see experiments/evaluate.py)."""
  flags.DEFINE_string('workdir', None, 'The training run to sample from.')
  flags.DEFINE_integer('num_samples', 1, 'Files (streams sampled together).')
  flags.DEFINE_float('seconds', None, 'New audio per file; default the MIDI length with --midi.')
  flags.DEFINE_string('out', None, 'Output directory.')
  flags.DEFINE_integer('step', None, 'Checkpoint step; default the latest.')
  flags.DEFINE_float('temperature', 1.0, 'Sampling temperature.')
  flags.DEFINE_list('temperatures', None, 'A VQ-VAE hierarchy: one temperature per stage, the '
                    'prior first, then each level from the top (in place of --temperature).')
  flags.DEFINE_string('prompt', None, 'A wav file to continue.')
  flags.DEFINE_float('prompt_seconds', None, 'Use this much of the prompt; default all of it.')
  flags.DEFINE_string('midi', None, 'MIDI file for a MIDI-conditioned model.')
  flags.DEFINE_string('mel_from', None, 'A wav whose mel conditions a mel vocoder.')
  flags.DEFINE_string('mel', None, 'Saved log-mel frames (.npy [F, n_mels]) for a mel vocoder.')
  flags.DEFINE_integer('global_id', None, 'The id of a globally conditioned model.')
  flags.DEFINE_integer('seed', 0, 'PRNG seed.')
  flags.DEFINE_float('chunk_seconds', 1.0, 'Audio per sampler call and per write.')


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if f.workdir is None or f.out is None:
    raise app.UsageError('--workdir and --out are required')
  with runtime.one_line_errors('sample'):
    distributed.initialize()
    temperature = f.temperature
    if f.temperatures:
      try:
        temperature = tuple(float(t) for t in f.temperatures)
      except ValueError:
        raise ValueError(f'--temperatures={",".join(f.temperatures)}: expected numbers, '
                         'e.g. 0.9,1,1') from None
    sample(f.workdir, f.num_samples, f.seconds, f.out, f.step, temperature, f.prompt,
           f.prompt_seconds, f.midi, f.seed, f.chunk_seconds, f.global_id, f.mel_from, f.mel)
  distributed.shutdown()


if __name__ == '__main__':
  define_flags()
  app.run(main)
