"""The flow vocoders in the trainer: sharded loss equal to one device's, a falling loss on the
embedded corpus, resume after SIGKILL (ActNorm's state included), vocoding through
experiments/sample.py from a wav's or a saved mel."""

import os

import jax
import numpy as np
import pytest
import soundfile as sf

from data import pipeline
from experiments import sample
from experiments import train
from tests.conftest import assert_sharded_loss_equals_one_device
from tests.conftest import config_path
from tests.conftest import kill_and_resume
from tests.conftest import metric_over_steps
from tests.conftest import tiny_flow
from tests.conftest import train_step_of

FLOWS = ('waveglow', 'flowavenet', 'waveflow')


@pytest.mark.parametrize('name', FLOWS)
def test_sharded_loss_and_gradients_equal_one_device(name):
  assert_sharded_loss_equals_one_device(lambda mesh: tiny_flow(name, mesh=mesh))


@pytest.mark.slow
@pytest.mark.parametrize('name', FLOWS)
def test_loss_falls_on_the_embedded_corpus(name):
  """40 steps on the embedded corpus: the mean NLL of the last 10 is 1 bit per 16-bit sample
  below that of the first 5."""
  c = tiny_flow(name, total_steps=40, **{'optim.learning_rate': 3e-3, 'optim.warmup_steps': 5})
  bits = metric_over_steps(c, *train_step_of(c), 'bits_per_sample', 40)
  assert np.mean(bits[-10:]) < np.mean(bits[:5]) - 1.0, bits


@pytest.mark.slow
def test_killed_flowavenet_resumes_bit_identically(tmp_path):
  """FloWaveNet's model state (ActNorm's data statistics, set at step 1) survives the kill."""
  flags_ = [f'--config.{k}={v}' for k, v in {
      'model.num_blocks': 3, 'model.flows_per_block': 2, 'model.split_every': 2,
      'model.channels': 16, 'input.crop_samples': 1024, 'microbatches': 1,
      'log_every_steps': 2, 'evals.validation.every_steps': 0, 'evals.sample.every_steps': 0,
      'evals.resynthesis.every_steps': 0, 'optim.warmup_steps': 2, 'total_steps': 8,
      'checkpoint.every_steps': 2, 'checkpoint.keep': 20}.items()]
  a, b, _ = kill_and_resume(tmp_path, config_path('flowavenet') + ':runlocal', flags_, 8)
  assert all(bool(v['initialized']) for v in b['model_state']['actnorm'].values())
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def waveglow_run(tmp_path_factory):
  """A 2-step tiny WaveGlow on the embedded corpus, and 0.25 s of validation as a wav."""
  c = tiny_flow('waveglow', total_steps=2)
  workdir = str(tmp_path_factory.mktemp('waveglow'))
  train.train_and_evaluate(c, workdir)
  v = c.input.copy_and_resolve_references()
  v.split = 'validation'
  source, _ = pipeline.load_source(v)
  wav = str(tmp_path_factory.mktemp('wav') / 'held_out.wav')
  sf.write(wav, source[0]['audio'][:4000], 16000, subtype='PCM_16')
  return workdir, c, wav


def test_sample_vocodes_a_wav_and_a_saved_mel_alike(waveglow_run, tmp_path):
  workdir, c, wav = waveglow_run
  from_wav = sample.sample(workdir, 2, None, str(tmp_path / 'a'), mel_from=wav,
                           chunk_seconds=0.1)
  mel = sample.wav_mel(c, wav)
  assert mel.shape == (1, 8, c.input.mel.n_mels)  # ceil(4,000 / 512) frames
  np.save(tmp_path / 'mel.npy', mel[0])
  from_npy = sample.sample(workdir, 2, None, str(tmp_path / 'b'), mel=str(tmp_path / 'mel.npy'))
  for x, y in zip(from_wav, from_npy):
    a, rate = sf.read(x, dtype='int16')
    b, _ = sf.read(y, dtype='int16')
    assert rate == 16000 and len(a) == 8 * 512  # every frame's hop
    np.testing.assert_array_equal(a, b)  # chunked by 0.1 s or not: the same audio
  assert not np.array_equal(sf.read(from_wav[0])[0], sf.read(from_wav[1])[0])


def test_sample_errors_for_a_flow_are_one_line(waveglow_run, tmp_path):
  workdir, c, wav = waveglow_run
  with pytest.raises(ValueError, match=r"conditioned on 'mel'; pass --mel_from=file.wav or "
                     '--mel=frames.npy'):
    sample.sample(workdir, 1, 1.0, str(tmp_path))
  with pytest.raises(ValueError, match='pass one'):
    sample.sample(workdir, 1, None, str(tmp_path), mel_from=wav, mel=wav)
  with pytest.raises(FileNotFoundError, match='--mel=.*nope.npy: no such file'):
    sample.sample(workdir, 1, None, str(tmp_path), mel=str(tmp_path / 'nope.npy'))
  np.save(tmp_path / 'narrow.npy', np.zeros((5, 7), np.float32))
  with pytest.raises(ValueError, match=r'narrow.npy: float32 array of shape \(1, 5, 7\); '
                     r'expected finite floats \[frames, 80\]'):
    sample.sample(workdir, 1, None, str(tmp_path), mel=str(tmp_path / 'narrow.npy'))
  with pytest.raises(ValueError, match='mel vocoder: it does not continue a prompt'):
    sample.sample(workdir, 1, None, str(tmp_path / 'out'), mel_from=wav, prompt=wav)
  with pytest.raises(ValueError, match=r'num_samples=16000: the mel of 8 frames covers 4096'):
    sample.sample(workdir, 1, 1.0, str(tmp_path / 'out'), mel_from=wav)
  assert os.listdir(tmp_path / 'out') == []  # refused before any file was opened
