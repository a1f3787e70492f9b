r"""Wave2Midi2Wave (Hawthorne et al. 2019): transcription, a model of the MIDI, and a
MIDI-conditioned synthesiser, each stage from its own training run, joined.

    # (a) audio -> transcription -> resynthesis
    python -m experiments.wave2midi2wave --route=resynthesize --audio=in.wav \
        --transcriber=/tmp/of --synthesizer=/tmp/wn_midi --out=/tmp/w2m2w_a
    # (b) audio -> transcription -> Music Transformer continuation -> synthesis
    python -m experiments.wave2midi2wave --route=continue --audio=in.wav --transcriber=/tmp/of \
        --composer=/tmp/mt --synthesizer=/tmp/wn_midi --seconds=5 --out=/tmp/w2m2w_b
    #     ... or a MIDI file continued: --midi=primer.mid in place of --audio and --transcriber
    # (c) Music Transformer from scratch -> synthesis
    python -m experiments.wave2midi2wave --route=compose --composer=/tmp/mt \
        --synthesizer=/tmp/wn_midi --seconds=5 --out=/tmp/w2m2w_c
    # MIDI adherence of the synthesiser, beside the transcriber's ceiling on the real audio
    python -m experiments.wave2midi2wave --route=adherence --midi=piece.mid --audio=piece.wav \
        --transcriber=/tmp/of --synthesizer=/tmp/wn_midi --out=/tmp/w2m2w_adherence

Stages: the transcriber (models/__init__.py kind 'transcriber', experiments/transcribe.py), the
composer (kind 'symbolic': the Music Transformer's `compose`, its primer the transcription's
last events) and the synthesiser (a model conditioned on MIDI frame features, e.g. WaveNet's
`midi` variant, through experiments/sample.py with --midi). Each stage's MIDI stays beside the
audio in --out:

    transcription.mid     (a, b, adherence) the transcriber's notes of --audio
    continuation.mid      (b) the transcription (or the --midi primer), then --seconds of the
                          composer's events
    composition.mid       (c) --seconds of the composer's events
    synthesis.wav         (a, b, c, adherence) the synthesiser's rendering of the last MIDI
                          (the --midi file for adherence)
    synthesis.mid         the transcriber's notes of synthesis.wav (when a transcriber is given)
    scores.json           the stages' files and settings, and where a transcriber is given:
                          'adherence', mir_eval's scores of synthesis.mid against the MIDI that
                          conditioned the synthesis; with --midi, 'ceiling', those of
                          transcription.mid (the real audio's) against --midi: what the
                          transcriber scores on real audio of the same notes

--seconds cuts --audio and --midi to their first seconds (a, adherence) and sets the length of
new music (b, c). Runs in one process.
"""

import json
import os

from absl import app
from absl import flags
import jax
import numpy as np
import soundfile as sf

from data import audio as audio_lib
from data import midi as midi_lib
from data import midi_events
from data import transcription_metrics
from experiments import checkpoint
from experiments import runtime
from experiments import sample as sample_lib
from experiments import state as state_lib
from experiments import transcribe as transcribe_lib
import models

ROUTES = ('resynthesize', 'continue', 'compose', 'adherence')
_NEEDS = {'resynthesize': ('audio', 'transcriber', 'synthesizer'),
          'continue': ('audio', 'transcriber', 'composer', 'synthesizer', 'seconds'),  # or midi
          'compose': ('composer', 'synthesizer', 'seconds'),
          'adherence': ('audio', 'midi', 'transcriber', 'synthesizer')}


def _cut(notes: midi_lib.Notes, seconds: float | None) -> midi_lib.Notes:
  """The notes that start before `seconds`, ended there at the latest."""
  if seconds is None:
    return notes
  keep = notes.onsets < seconds
  return midi_lib.make_notes(notes.onsets[keep], np.minimum(notes.offsets[keep], seconds),
                             notes.pitches[keep], notes.velocities[keep])


def _audio_cut(path: str, seconds: float | None, out_dir: str) -> str:
  """`path`, or its first `seconds` written to out_dir/input.wav."""
  if seconds is None:
    return path
  wave, rate = audio_lib.read_audio(path, mono=False)
  out = os.path.join(out_dir, 'input.wav')
  sf.write(out, wave[:int(round(seconds * rate))], rate)
  return out


def compose_midi(workdir: str, seconds: float, primer: midi_lib.Notes | None, seed: int = 0,
                 temperature: float = 1.0) -> midi_lib.Notes:
  """The composer's notes: the primer's (if given), then `seconds` of new events."""
  state, config = checkpoint.load(workdir, keys=state_lib.VARIABLE_KEYS)
  family = models.family(config.model_name)
  if not hasattr(family, 'compose'):
    raise ValueError(f'--composer={workdir} holds a {config.model_name}, not a model of MIDI '
                     'events (e.g. music_transformer)')
  model = models.create(config)
  full = np.zeros(0, np.int32) if primer is None else midi_events.encode(primer)
  cut = max(0, len(full) - model.max_length // 2)  # the primer: the last half-context
  events = full[cut:]
  new = family.compose(model, state_lib.variables(state), jax.random.key(seed), seconds,
                       primer=events[None] if len(events) else None,
                       temperature=temperature)[0]
  if primer is None:
    return midi_events.decode(new)
  # Decoded after the primer's events, the new notes are those from its end on; their times
  # count from the cut, which sits `origin` seconds into the piece. The primer's own notes stay
  # as transcribed (not as re-quantised by the encoding).
  steps = lambda e: int(midi_events.elapsed_steps(e)[-1]) if len(e) else 0
  origin = steps(full[:cut]) / midi_events.STEPS_PER_SECOND
  both = midi_events.decode(np.concatenate([events, new]))
  late = both.onsets >= steps(events) / midi_events.STEPS_PER_SECOND
  return midi_lib.make_notes(
      np.concatenate([primer.onsets, both.onsets[late] + origin]),
      np.concatenate([primer.offsets, both.offsets[late] + origin]),
      np.concatenate([primer.pitches, both.pitches[late]]),
      np.concatenate([primer.velocities, both.velocities[late]]))


def _synthesize(workdir: str, midi_path: str, out_dir: str, seed: int,
                temperature: float) -> str:
  """The synthesiser's rendering of a MIDI file as out_dir/synthesis.wav."""
  paths = sample_lib.sample(workdir, 1, None, os.path.join(out_dir, 'synthesis'), seed=seed,
                            temperature=temperature, midi=midi_path)
  out = os.path.join(out_dir, 'synthesis.wav')
  os.replace(paths[0], out)
  os.rmdir(os.path.dirname(paths[0]))  # the sampler's directory, empty once its file moved
  return out


def run(route: str, out: str, audio: str | None = None, midi: str | None = None,
        transcriber: str | None = None, composer: str | None = None,
        synthesizer: str | None = None, seconds: float | None = None, seed: int = 0,
        temperature: float = 1.0) -> dict:
  """Runs `route` (module docstring) and returns what it writes to out/scores.json."""
  if route not in ROUTES:
    raise ValueError(f'--route={route!r}: expected one of {", ".join(ROUTES)}')
  given = {'audio': audio, 'midi': midi, 'transcriber': transcriber, 'composer': composer,
           'synthesizer': synthesizer, 'seconds': seconds}
  needs = _NEEDS[route]
  if route == 'continue' and midi is not None:  # a MIDI primer in place of a transcription
    if audio is not None:
      raise ValueError(f'--route=continue: --audio={audio} and --midi={midi}: pass one primer')
    needs = tuple(k for k in needs if k not in ('audio', 'transcriber'))
  missing = [f'--{k}' for k in needs if given[k] is None]
  if missing:
    raise ValueError(f'--route={route} needs {", ".join(missing)}')
  if seconds is not None and seconds <= 0:
    raise ValueError(f'--seconds={seconds}: expected a positive length')
  os.makedirs(out, exist_ok=True)
  record = {'route': route, **{k: v for k, v in given.items() if v is not None}, 'seed': seed,
            'temperature': temperature}
  path = lambda name: os.path.join(out, name)
  transcription = None
  if audio is not None:
    cut = _audio_cut(audio, seconds if route in ('resynthesize', 'adherence') else None, out)
    transcription = transcribe_lib.transcribe(transcriber, cut, path('transcription.mid'))
  if route == 'resynthesize':
    conditioning = path('transcription.mid')
  elif route == 'adherence':
    conditioning = path('reference.mid')
    midi_lib.write_midi(conditioning, _cut(midi_lib.load_notes(midi), seconds))
  else:
    name = 'continuation.mid' if route == 'continue' else 'composition.mid'
    conditioning = path(name)
    primer = midi_lib.load_notes(midi) if route == 'continue' and midi else transcription
    midi_lib.write_midi(conditioning, compose_midi(composer, seconds, primer, seed,
                                                   temperature))
  record['synthesis'] = _synthesize(synthesizer, conditioning, out, seed, temperature)
  target = midi_lib.load_notes(conditioning)  # the notes the synthesiser was given
  if transcriber is not None:
    heard = transcribe_lib.transcribe(transcriber, record['synthesis'], path('synthesis.mid'))
    record['adherence'] = transcription_metrics.note_scores(target, heard)
  if route == 'adherence':
    record['ceiling'] = transcription_metrics.note_scores(target, transcription)
  with open(path('scores.json'), 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=1, sort_keys=True)
  return record


def main(argv):
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if f.route is None or f.out is None:
    raise app.UsageError('--route and --out are required')
  with runtime.one_line_errors('wave2midi2wave'):
    record = run(f.route, f.out, f.audio, f.midi, f.transcriber, f.composer, f.synthesizer,
                 f.seconds, f.seed, f.temperature)
  for key in ('adherence', 'ceiling'):
    if key in record:
      print(f'{key}: ' + ' '.join(f'{k}={record[key][k]:.3f}' for k in (
          'note_f1', 'note_with_offset_f1', 'note_with_offset_velocity_f1')))
  print(f'{f.route}: {record["synthesis"]} (MIDI beside it in {f.out})')


if __name__ == '__main__':
  flags.DEFINE_enum('route', None, ROUTES, 'Which pipeline to run (module docstring).')
  flags.DEFINE_string('out', None, 'Output directory.')
  flags.DEFINE_string('audio', None, 'A wav to transcribe.')
  flags.DEFINE_string('midi', None, 'The true MIDI of --audio (adherence), or a primer (continue).')
  flags.DEFINE_string('transcriber', None, 'Workdir of a transcriber (onsets_frames).')
  flags.DEFINE_string('composer', None, 'Workdir of a model of events (music_transformer).')
  flags.DEFINE_string('synthesizer', None, 'Workdir of a MIDI-conditioned synthesiser.')
  flags.DEFINE_float('seconds', None, 'Input cut / new music length, in seconds.')
  flags.DEFINE_integer('seed', 0, 'PRNG seed of the composer and the synthesiser.')
  flags.DEFINE_float('temperature', 1.0, 'Sampling temperature of composer and synthesiser.')
  app.run(main)
