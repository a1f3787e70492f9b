"""The translators (the UMT, Blow) in the trainer and the jobs: sharded loss equal to one
device's, a falling loss on the embedded multi-instrument corpus, resume after SIGKILL, the
translation evaluator against paired renderings, experiments/translate.py and sample.py."""

import os

import jax
import numpy as np
import pytest
import soundfile as sf

from data import pipeline
from data import specs
from experiments import evaluate
from experiments import sample
from experiments import train
from experiments import translate
from experiments.evaluators import translation
import models
from tests.conftest import assert_sharded_loss_equals_one_device
from tests.conftest import config_path
from tests.conftest import kill_and_resume
from tests.conftest import metric_over_steps
from tests.conftest import TEST_DATASET
from tests.conftest import tiny_onsets_frames
from tests.conftest import tiny_translator
from tests.conftest import train_step_of

TRANSLATORS = ('umt', 'blow')


@pytest.mark.parametrize('name', TRANSLATORS)
def test_sharded_loss_and_gradients_equal_one_device(name):
  assert_sharded_loss_equals_one_device(lambda mesh: tiny_translator(name, mesh=mesh))


@pytest.mark.slow
@pytest.mark.parametrize('name,learning_rate,steps,drop', [('umt', 1e-2, 60, 0.3),
                                                          ('blow', 3e-3, 40, 0.5)])
def test_loss_falls_on_the_embedded_corpus(name, learning_rate, steps, drop):
  """`steps` steps on the embedded multi-instrument corpus: the mean bits per sample of the
  last 10 steps is `drop` bits below that of the first 5."""
  c = tiny_translator(name, total_steps=steps, **{'optim.learning_rate': learning_rate,
                                                  'optim.warmup_steps': 5})
  bits = metric_over_steps(c, *train_step_of(c), 'bits_per_sample', steps)
  assert np.mean(bits[-10:]) < np.mean(bits[:5]) - drop, bits


@pytest.mark.slow
@pytest.mark.parametrize('name', TRANSLATORS)
def test_killed_translator_resumes_bit_identically(name, tmp_path):
  model = {'umt': {'encoder_blocks': 1, 'encoder_layers': 2, 'encoder_channels': 8,
                   'latent_dim': 4, 'decoder.num_layers': 3, 'decoder.dilation_cycle': 3,
                   'decoder.residual_channels': 8, 'decoder.gate_channels': 16,
                   'decoder.skip_channels': 8},
           'blow': {'frame_samples': 256, 'num_blocks': 2, 'flows_per_block': 2,
                    'channels': 16}}[name]
  settings = {**{f'model.{k}': v for k, v in model.items()},
              'input.crop_samples': 1024, 'microbatches': 1, 'log_every_steps': 2,
              'evals.translation.every_steps': 0, 'optim.warmup_steps': 2, 'total_steps': 8,
              'evals.validation.every_steps': 0, 'checkpoint.every_steps': 2,
              'checkpoint.keep': 20}
  flags_ = [f'--config.{k}={v}' for k, v in settings.items()]
  a, b, _ = kill_and_resume(tmp_path, config_path(name) + ':runlocal', flags_, 8)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def _on_fixture(name, instruments_dir, data_dir, **overrides):
  c = tiny_translator(name, total_steps=2, **overrides)
  c.input.update(dataset=TEST_DATASET, manual_dir=instruments_dir, data_dir=data_dir,
                 crop_samples=1000 if name == 'umt' else 1024)  # the UMT: whole 500-sample frames
  c.evals.translation.update(seconds=0.25, batch_size=8, classifier_steps=50)
  return c


@pytest.fixture(scope='module')
def runs(instruments_dir, tmp_path_factory):
  """2-step tiny runs of both translators on the multi-instrument fixture, and a wav of its
  validation piece's organ rendering."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  out = {}
  for name in TRANSLATORS:
    c = _on_fixture(name, instruments_dir, data_dir)
    workdir = str(tmp_path_factory.mktemp(name))
    train.train_and_evaluate(c, workdir)
    out[name] = (workdir, c)
  v = c.input.copy_and_resolve_references()
  v.split = 'validation'
  source, _ = pipeline.load_source(v)
  organ = next(ex for ex in source if specs.INSTRUMENTS[int(ex['instrument'])] == 'organ')
  wav = str(tmp_path_factory.mktemp('wav') / 'organ.wav')
  sf.write(wav, organ['audio'][:6000], 16000, subtype='PCM_16')
  return {**out, 'wav': wav}


def test_paired_clips_hold_every_instrument_of_a_score(runs):
  _, c = runs['umt']
  clips = translation.paired_clips(c, 'test', 0.25)
  assert clips['instruments'] == tuple(range(len(specs.INSTRUMENTS)))
  assert clips['audio'].shape == (1, len(specs.INSTRUMENTS), 4000)
  assert clips['pianoroll'].shape == (1, 8, specs.NUM_KEYS) and clips['pianoroll'].any()
  # Each instrument's own rendering, of the same notes: not the same audio.
  a = clips['audio'][0]
  assert all(not np.allclose(a[i], a[j]) for i in range(len(a)) for j in range(i))


def test_the_classifier_knows_the_instruments_of_the_test_score(runs):
  """Trained on the fixture's 2 training scores, it names the instrument of the unseen test
  score's clips better than chance (1 in 5)."""
  _, c = runs['umt']
  clips = translation.paired_clips(c, 'test', 0.25)
  params = translation.train_classifier(c, 0.25, 200)
  ids = translation.classify(params, c, clips['audio'][0])
  assert np.mean(ids == np.arange(len(specs.INSTRUMENTS))) >= 0.6, ids


@pytest.mark.parametrize('name', TRANSLATORS)
def test_evaluate_scores_translations_against_paired_renderings(runs, name, capsys):
  workdir, _ = runs[name]
  record = evaluate.evaluate_checkpoint(workdir, split='test', eval_name='translation')
  k = len(specs.INSTRUMENTS)
  for key in ('log_mel_l1', 'mr_stft', 'target_accuracy'):
    pairs = [v for n, v in record.items() if n.startswith(f'{key}/')]
    assert len(pairs) == k * k and np.all(np.isfinite(pairs)), key
    assert np.isfinite(record[key]) and np.isfinite(record[f'identity_{key}'])
  # The baselines: the target rendering against itself is at distance 0, the identity is not.
  assert record['target_log_mel_l1'] == 0 and record['target_mr_stft'] == 0
  assert record['identity_log_mel_l1'] > 0
  assert record['identity_log_mel_l1/piano_to_piano'] == 0
  assert 0 <= record['target_accuracy'] <= 1
  table = capsys.readouterr().out
  assert '| from \\ to | piano | organ | harpsichord | strings | mallet |' in table


@pytest.mark.parametrize('name', TRANSLATORS)
def test_translate_writes_the_wav_at_the_model_rate(runs, name, tmp_path):
  (workdir, _), wav = runs[name], runs['wav']
  out = str(tmp_path / 'harpsichord.wav')
  y = translate.translate(workdir, wav, 'harpsichord', out, source='organ')
  x, rate = sf.read(out, dtype='float32')
  assert rate == 16000 and len(x) == len(y) == 6000
  assert np.all(np.isfinite(x)) and np.abs(x).max() <= 1
  assert not os.path.exists(out + '.partial')


def test_translate_errors_are_one_line(runs, tmp_path):
  (workdir, _), wav = runs['blow'], runs['wav']
  with pytest.raises(ValueError, match=r"--to='theremin': expected one of piano, organ"):
    translate.translate(workdir, wav, 'theremin', str(tmp_path / 'x.wav'))
  with pytest.raises(ValueError, match='is not a writable directory'):
    translate.translate(workdir, wav, 'organ', str(tmp_path / 'nope' / 'x.wav'))
  with pytest.raises(Exception, match='missing.wav'):
    translate.translate(workdir, str(tmp_path / 'missing.wav'), 'organ')
  assert os.listdir(tmp_path) == []


def test_blow_samples_an_instrument_and_the_umt_refuses(runs, tmp_path):
  blow_dir, _ = runs['blow']
  paths = sample.sample(blow_dir, 2, 0.1, str(tmp_path / 'blow'), global_id=2)
  for p in paths:
    x, rate = sf.read(p)
    assert rate == 16000 and len(x) == 1600 and np.all(np.isfinite(x))
  umt_dir, _ = runs['umt']
  with pytest.raises(ValueError, match='draws audio from a source recording'):
    sample.sample(umt_dir, 1, 0.1, str(tmp_path / 'umt'), global_id=1)


def test_a_transcriber_scores_the_translations_notes(runs, maestro_dir, tmp_path):
  """With `transcriber` (a 2-step tiny Onsets and Frames on the piano fixture: the same rate
  and hop), the evaluator adds mir_eval's note F1 of every pair and of the baselines."""
  c = tiny_onsets_frames(total_steps=2)
  c.input.update(dataset=TEST_DATASET, manual_dir=maestro_dir,
                 data_dir=str(tmp_path / 'tfds'), crop_samples=4000)
  train.train_and_evaluate(c, str(tmp_path / 'of'))
  _, blow = runs['blow']
  context = type('Context', (), {'config': blow, 'family': models.family('blow')})()
  evaluator = translation.Evaluator(context, split='test', seconds=0.25, classifier_steps=20,
                                    transcriber=str(tmp_path / 'of'))
  figures = evaluator.baseline()
  k = len(specs.INSTRUMENTS)
  f1 = [v for n, v in figures.items() if n.startswith('identity_note_f1/')]
  assert len(f1) == k * k and all(0 <= v <= 1 or np.isnan(v) for v in f1)
  assert 'target_note_f1' in figures
  c.input.dataset = 'sr16000_seg16000_hop250'  # another frame grid: refused in one line
  with pytest.raises(ValueError, match=r"reads audio at \(rate, hop\)"):
    translation._Transcriber(str(tmp_path / 'of'), c.input)
