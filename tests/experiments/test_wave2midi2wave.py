"""experiments/wave2midi2wave.py: its four routes over a transcriber, a composer and a
MIDI-conditioned synthesiser, each a real (briefly trained) run, and the continuation's notes."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from data import midi
from data import synth
from experiments import train
from experiments import wave2midi2wave as w2m2w
from tests.conftest import run_module
from tests.conftest import tiny_midi_wavenet
from tests.conftest import tiny_music_transformer
from tests.conftest import tiny_onsets_frames

NOTES = midi.make_notes([0.1, 0.5, 0.9, 1.2], [0.4, 0.9, 1.5, 1.8], [60, 64, 67, 72],
                        [80, 100, 60, 90])


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """2-step runs of the three stages, and a piece: its wav (rendered) and its MIDI."""
  d = tmp_path_factory.mktemp('w2m2w')
  out = {}
  for name, config in (('transcriber', tiny_onsets_frames(total_steps=2)),
                       ('composer', tiny_music_transformer(total_steps=2)),
                       ('synthesizer', tiny_midi_wavenet(total_steps=2))):
    out[name] = str(d / name)
    train.train_and_evaluate(config, out[name])
  out['audio'], out['midi'] = str(d / 'piece.wav'), str(d / 'piece.mid')
  sf.write(out['audio'], synth.render(NOTES, 16000, 32000), 16000)
  midi.write_midi(out['midi'], NOTES)
  return out


def _same(a: midi.Notes, b: midi.Notes) -> bool:
  return len(a) == len(b) and all(
      np.allclose(getattr(a, f), getattr(b, f), atol=2e-3)
      for f in ('onsets', 'offsets', 'pitches', 'velocities'))


@pytest.mark.slow
def test_the_routes_write_each_stages_midi_beside_the_audio(runs, tmp_path):
  for route, extra, files in (
      ('resynthesize', {}, ('transcription.mid', 'synthesis.wav', 'synthesis.mid')),
      ('continue', {'seconds': 1.0}, ('transcription.mid', 'continuation.mid', 'synthesis.wav')),
      ('compose', {'seconds': 2.0}, ('composition.mid', 'synthesis.wav')),
      ('adherence', {'seconds': 2.0}, ('transcription.mid', 'reference.mid', 'synthesis.wav'))):
    out = str(tmp_path / route)
    needs = w2m2w._NEEDS[route]  # pylint: disable=protected-access
    kwargs = {k: runs[k] for k in ('audio', 'midi', 'transcriber', 'composer', 'synthesizer')
              if k in needs}
    record = w2m2w.run(route, out, **kwargs, **extra)
    for name in files + ('scores.json',):
      assert os.path.exists(os.path.join(out, name)), (route, name)
    with open(os.path.join(out, 'scores.json'), encoding='utf-8') as f:
      assert json.load(f)['route'] == route
    wave, rate = sf.read(record['synthesis'])
    conditioning = {'resynthesize': 'transcription.mid', 'continue': 'continuation.mid',
                    'compose': 'composition.mid', 'adherence': 'reference.mid'}[route]
    notes = midi.load_notes(os.path.join(out, conditioning))
    assert rate == 16000 and len(wave) >= int(notes.end_time * rate) - 1
    if 'transcriber' in needs:
      assert 0 <= record['adherence']['note_f1'] <= 1
    if route == 'adherence':
      assert _same(notes, NOTES)  # the first 2 s: all of it
      assert record['ceiling']['num_ref_notes'] == len(NOTES)


@pytest.mark.slow
def test_a_midi_file_is_continued_in_place_of_a_transcription(runs, tmp_path):
  record = w2m2w.run('continue', str(tmp_path), midi=runs['midi'], composer=runs['composer'],
                     synthesizer=runs['synthesizer'], seconds=1.0, seed=3)
  cont = midi.load_notes(str(tmp_path / 'continuation.mid'))
  assert not (tmp_path / 'transcription.mid').exists() and 'adherence' not in record
  np.testing.assert_allclose(cont.onsets[:len(NOTES)], NOTES.onsets, atol=2e-3)
  np.testing.assert_array_equal(cont.pitches[:len(NOTES)], NOTES.pitches)
  with pytest.raises(ValueError, match='pass one primer'):
    w2m2w.run('continue', str(tmp_path), audio=runs['audio'], midi=runs['midi'],
              transcriber=runs['transcriber'], composer=runs['composer'],
              synthesizer=runs['synthesizer'], seconds=1.0)


@pytest.mark.slow
def test_a_continuation_keeps_the_primer_and_follows_it(runs):
  cont = w2m2w.compose_midi(runs['composer'], 1.0, NOTES, seed=3)
  first = midi.make_notes(*(getattr(cont, f)[:len(NOTES)]
                            for f in ('onsets', 'offsets', 'pitches', 'velocities')))
  assert _same(first, NOTES)  # the primer's notes as given, then only later onsets
  assert np.all(cont.onsets[len(NOTES):] >= 1.8 - 1e-6)
  assert cont.onsets.max() < 1.8 + 1.0 + 0.01
  again = w2m2w.compose_midi(runs['composer'], 1.0, NOTES, seed=3)
  assert _same(again, cont)


def test_missing_stages_are_one_line(tmp_path):
  code, out = run_module('experiments.wave2midi2wave', '--route=continue',
                         f'--out={tmp_path}', '--composer=/nowhere')
  assert code == 1
  assert out.strip().splitlines()[-1] == ('wave2midi2wave: --route=continue needs --audio, '
                                          '--transcriber, --synthesizer, --seconds')
