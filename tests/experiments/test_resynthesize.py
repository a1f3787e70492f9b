"""The mel vocoder harness: WaveNet on 'mel', the spectral evaluator, resynthesis and sampling
from a wav's mel."""

import json
import os
import types

import numpy as np
import pytest
import soundfile as sf

from data import audio as audio_lib
from data import pipeline
from experiments import evaluate
from experiments import resynthesize
from experiments import sample
from experiments import train
from experiments.evaluators import spectral as spectral_eval
import models
from tests.conftest import tiny_on_fixture
from tests.conftest import tiny_wavenet

RATE = 16000


@pytest.fixture(scope='module')
def mel_run(maestro_dir, tmp_path_factory):
  """(workdir, config) of a 4-step mel-conditioned WaveNet on the fixture corpus, with a small
  spectral evaluator entry (run by the evaluate job, not by the trainer)."""
  config = tiny_on_fixture(maestro_dir, str(tmp_path_factory.mktemp('tfds')), 'mel,runlocal')
  config.evals.resynthesis.update(every_steps=0, clips=2, seconds=0.25, griffin_lim_iters=16)
  out = str(tmp_path_factory.mktemp('mel_run'))
  train.train_and_evaluate(config, out)
  return out, config


@pytest.fixture(scope='module')
def held_out_wav(mel_run, tmp_path_factory):
  """0.5 s of the validation piece's segment at 16 kHz, written as a 22.05 kHz wav (so that
  resynthesis resamples it)."""
  _, config = mel_run
  c = config.input.copy_and_resolve_references()
  c.split = 'validation'
  source, _ = pipeline.load_source(c)
  wave = audio_lib.resample(audio_lib.from_int16(source[0]['audio'][:8000]), RATE, 22050)
  path = str(tmp_path_factory.mktemp('wav') / 'held_out.wav')
  sf.write(path, wave, 22050, subtype='PCM_16')
  return path


def test_evaluator_scores_the_vocoder_and_griffin_lim(mel_run):
  workdir, _ = mel_run
  record = evaluate.evaluate_checkpoint(workdir, eval_name='resynthesis')
  for name in ('log_mel_l1', 'mr_stft', 'magnitude_snr'):
    assert np.isfinite(record[name]) and np.isfinite(record[f'griffin_lim_{name}'])
  # Griffin-Lim inverts the mel: far closer to the reference than a 4-step WaveNet.
  assert record['griffin_lim_log_mel_l1'] < record['log_mel_l1']
  assert record['griffin_lim_magnitude_snr'] > record['magnitude_snr']
  # 8-bit mu-law itself costs little next to Griffin-Lim on the magnitudes, at floor 0.01.
  assert record['encoded_magnitude_snr'] > 20 > record['griffin_lim_magnitude_snr']
  assert record['encoded_log_mel_l1'] < record['griffin_lim_log_mel_l1']
  saved = evaluate.read_results(workdir, 'validation')
  assert saved['steps']['4/eval=resynthesis']['griffin_lim_mr_stft'] == record[
      'griffin_lim_mr_stft']
  assert saved['baseline']['values']['griffin_lim_log_mel_l1'] == record['griffin_lim_log_mel_l1']


def test_griffin_lim_baseline_beats_silence_and_noise(mel_run):
  """The harness's Griffin-Lim is a real reconstruction: every distance is better than that of
  silence or of noise at the reference's level."""
  workdir, config = mel_run
  c = config.input.copy_and_resolve_references()
  c.update(split='validation', batch_size=2, crop_samples=4000, shuffle=False, encoding='float')
  batch = next(pipeline.make_batches(c))
  gl = spectral_eval.griffin_lim(batch['mel'], c, 4000, 32, 0)
  assert gl.shape == (2, 4000)
  ours = spectral_eval.distances(gl, batch['audio'], c)
  rng = np.random.default_rng(0)
  for other in (np.zeros_like(gl), rng.standard_normal(gl.shape) * batch['audio'].std()):
    d = spectral_eval.distances(other, batch['audio'], c)
    assert ours['log_mel_l1'] < d['log_mel_l1'] and ours['mr_stft'] < d['mr_stft']
    assert ours['magnitude_snr'] > d['magnitude_snr']
  assert ours['magnitude_snr'] > 3.0  # dB


def test_resynthesis_writes_the_three_wavs_and_their_distances(mel_run, held_out_wav, tmp_path):
  workdir, _ = mel_run
  result = resynthesize.resynthesize(workdir, held_out_wav, str(tmp_path), seconds=0.25,
                                     griffin_lim_iters=8)
  names = sorted(os.path.basename(p) for p in result['files'])
  assert names == ['held_out.griffin_lim.wav', 'held_out.reference.wav', 'held_out.vocoded.wav']
  for p in result['files']:
    info = sf.info(p)
    assert info.samplerate == RATE and info.frames == 4000
  saved = json.loads((tmp_path / 'held_out.json').read_text())
  assert saved['step'] == 4 and saved['griffin_lim'] == result['griffin_lim']
  assert set(saved['vocoded']) == {'log_mel_l1', 'mr_stft', 'magnitude_snr'}


def test_sampling_from_a_wavs_mel(mel_run, held_out_wav, tmp_path):
  workdir, config = mel_run
  with pytest.raises(ValueError, match=r"conditioned on 'mel'; pass --mel_from"):
    sample.sample(workdir, 1, 0.1, str(tmp_path))
  path = sample.sample(workdir, 1, None, str(tmp_path), mel_from=held_out_wav)[0]
  assert sf.info(path).frames == 8000  # the wav's length, at the model's rate
  # The mel of a wav is the training batches' mel of the same audio.
  mel = sample.wav_mel(config, held_out_wav)
  want = np.asarray(pipeline.mel_features(sample.load_prompt(config, held_out_wav)[None],
                                          config.input))
  np.testing.assert_array_equal(mel, want)
  assert mel.shape == (1, 16, 80)


def test_a_model_without_mel_is_refused(mel_run, held_out_wav):
  config = tiny_wavenet()
  context = types.SimpleNamespace(model=models.create(config), config=config)
  with pytest.raises(ValueError, match="not 'mel'"):
    spectral_eval.Evaluator(context)
  with pytest.raises(ValueError, match='--mel_from=.*not conditioned on mel'):
    sample._check_conditioning(models.create(config), 'run', None, None, held_out_wav)
