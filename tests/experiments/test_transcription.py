"""Onsets and Frames as a family of kind 'transcriber': the sharded loss, a falling loss on the
embedded corpus, exact resume after SIGKILL, the `transcription` evaluator and
experiments/evaluate.py over it, and experiments/transcribe.py from a wav to a MIDI file."""

import jax
import numpy as np
import pytest
import soundfile as sf

from data import midi
from data import synth
from experiments import evaluate
from experiments import sample as sample_lib
from experiments import transcribe
from tests.conftest import assert_sharded_loss_equals_one_device
from tests.conftest import config_path
from tests.conftest import kill_and_resume
from tests.conftest import metric_over_steps
from tests.conftest import run_module
from tests.conftest import tiny_onsets_frames
from tests.conftest import train_step_of


def test_sharded_loss_and_gradients_equal_one_device():
  assert_sharded_loss_equals_one_device(lambda mesh: tiny_onsets_frames(mesh=mesh))


def test_loss_falls_on_the_embedded_corpus():
  c = tiny_onsets_frames(**{'optim.learning_rate': 1e-2, 'total_steps': 30})
  loss = metric_over_steps(c, *train_step_of(c), 'loss', 30)
  assert np.mean(loss[-5:]) < 0.6 * np.mean(loss[:5]), loss


@pytest.mark.slow
def test_killed_run_resumes_bit_identically_then_scores_and_transcribes(tmp_path):
  flags_ = ['--config.total_steps=8', '--config.checkpoint.every_steps=2',
            '--config.model.filters=(2, 2, 4)', '--config.model.fc_size=8',
            '--config.model.lstm_units=4', '--config.input.crop_samples=4096',
            '--config.evals.validation.every_steps=8', '--config.evals.validation.batches=1',
            '--config.checkpoint.async_save=False']
  straight, killed, out = kill_and_resume(tmp_path, config_path('onsets_frames') + ':runlocal',
                                          flags_, total=8)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(killed)):
    np.testing.assert_array_equal(a, b)
  assert 'step 8 validation: frame_precision=' in out and ' note_f1=' in out
  workdir = str(tmp_path / 'killed')

  # The evaluator over the whole test split: every segment, with its reference notes counted.
  record = evaluate.evaluate_checkpoint(workdir, split='test', batch_size=8)
  assert record['segments'] > 0 and record['ref_notes'] > 0
  for k in ('frame_f1', 'note_f1', 'note_with_offset_f1', 'note_with_offset_velocity_f1'):
    assert 0 <= record[k] <= 1, (k, record[k])

  # A wav of known notes -> a MIDI file of the model's notes.
  notes = midi.make_notes([0.1, 0.5], [0.4, 0.9], [60, 64], [80, 100])
  wav = str(tmp_path / 'in.wav')
  sf.write(wav, synth.render(notes, 22050, 22050), 22050)  # stereo at another rate
  found = transcribe.transcribe(workdir, wav, str(tmp_path / 'out.mid'))
  back = midi.load_notes(str(tmp_path / 'out.mid'))
  assert len(back) == len(found)
  np.testing.assert_allclose(back.onsets, found.onsets, atol=2e-3)
  assert not list(tmp_path.glob('*.partial'))
  none = transcribe.transcribe(workdir, wav, None, onset_threshold=1.0)
  assert len(none) == 0

  # Bad input is one line: a missing wav, an unwritable output, sampling a transcriber.
  code, text = run_module('experiments.transcribe', f'--workdir={workdir}',
                          f'--audio={tmp_path / "missing.wav"}', f'--out={tmp_path / "x.mid"}')
  assert code == 1 and text.strip().splitlines()[-1].startswith('transcribe: ')
  assert 'missing.wav' in text.strip().splitlines()[-1]
  with pytest.raises(ValueError, match='is not a writable directory'):
    transcribe.transcribe(workdir, wav, str(tmp_path / 'no' / 'out.mid'))
  with pytest.raises(ValueError, match='a transcriber: it draws no audio'):
    sample_lib.sample(workdir, 1, 1.0, str(tmp_path / 'wav'))
