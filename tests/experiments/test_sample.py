"""The sampling job: wav files, prompt continuation, MIDI conditioning, and its errors."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from data import audio as audio_lib
from data import midi as midi_lib
from data import pipeline
from experiments import sample
from experiments import state as state_lib
from experiments import train
import models
from tests.conftest import ROOT
from tests.conftest import tiny_on_fixture as tiny_config

RATE = 16000


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def workdir(maestro_dir, data_dir, tmp_path_factory):
  """A 4-step unconditional WaveNet."""
  out = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(tiny_config(maestro_dir, data_dir), out)
  return out


@pytest.fixture(scope='module')
def midi_run(maestro_dir, data_dir, tmp_path_factory):
  """(workdir, config) of a 4-step MIDI-conditioned WaveNet."""
  config = tiny_config(maestro_dir, data_dir, 'midi,runlocal')
  out = str(tmp_path_factory.mktemp('midi_run'))
  train.train_and_evaluate(config, out)
  return out, config


@pytest.fixture(scope='module')
def midi_file(tmp_path_factory):
  """0.5 s of two notes: 8,000 samples at 16 kHz."""
  path = str(tmp_path_factory.mktemp('midi') / 'two_notes.mid')
  midi_lib.write_midi(path, midi_lib.make_notes([0.0, 0.25], [0.25, 0.5], [60, 64], [80, 100]))
  return path


def test_writes_pcm16_files_of_the_asked_length(workdir, tmp_path):
  paths = sample.sample(workdir, num_samples=2, seconds=0.3, out_dir=str(tmp_path),
                        chunk_seconds=0.1)
  assert [os.path.basename(p) for p in paths] == ['step4_seed0_000.wav', 'step4_seed0_001.wav']
  waves = []
  for p in paths:
    info = sf.info(p)
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (RATE, 1, 4800,
                                                                           'PCM_16')
    waves.append(sf.read(p)[0])
  assert not np.array_equal(waves[0], waves[1])  # independent streams


def test_chunking_does_not_change_the_audio(workdir, tmp_path):
  a = sample.sample(workdir, 1, 0.2, str(tmp_path / 'a'), chunk_seconds=0.2, seed=3)[0]
  b = sample.sample(workdir, 1, 0.2, str(tmp_path / 'b'), chunk_seconds=0.05, seed=3)[0]
  np.testing.assert_array_equal(sf.read(a, dtype='int16')[0], sf.read(b, dtype='int16')[0])


def test_a_slice_of_the_streams_draws_what_the_whole_set_draws(workdir):
  """What a process sampling streams [1, 3) of 3 (first_stream=1) writes, as in a 2-process
  `sample` run."""
  from experiments import checkpoint  # pylint: disable=g-import-not-at-top
  state, config = checkpoint.load(workdir)
  model, rng = models.create(config), jax.random.key(5)
  variables = state_lib.variables(state)
  whole = np.concatenate(list(sample.generate_audio(config, model, variables, rng, 3, 300,
                                                    chunk_samples=100)), axis=1)
  part = np.concatenate(list(sample.generate_audio(config, model, variables, rng, 2, 300,
                                                   chunk_samples=100, first_stream=1)), axis=1)
  assert whole.dtype == np.float32 and np.abs(whole).max() <= 1
  np.testing.assert_array_equal(part, whole[1:])
  assert not np.array_equal(whole[0], whole[1])


def test_prompt_is_resampled_kept_at_the_start_and_continued(workdir, tmp_path):
  t = np.arange(int(0.25 * 22050)) / 22050
  wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  prompt = str(tmp_path / 'prompt.wav')
  sf.write(prompt, np.stack([wave, wave], 1), 22050, subtype='PCM_16')  # stereo, 22.05 kHz
  path = sample.sample(workdir, 1, 0.1, str(tmp_path / 'out'), prompt=prompt,
                       prompt_seconds=0.2)[0]
  out, rate = sf.read(path, dtype='float32')
  expected = audio_lib.resample(audio_lib.read_audio(prompt)[0][:int(0.2 * 22050)], 22050, RATE)
  assert rate == RATE and len(out) == len(expected) + 1600
  # Within mu-law quantisation: half a code step through the expansion's slope, and int16.
  mu = 255.
  bound = np.log1p(mu) * (1 + mu * np.abs(expected)) * (1 + mu) ** (1 / mu) / mu ** 2
  assert np.all(np.abs(out[:len(expected)] - expected) <= bound + 1 / 32768)


def test_prompt_errors_name_the_file(workdir, tmp_path):
  missing = str(tmp_path / 'missing.wav')
  with pytest.raises(audio_lib.AudioError, match='missing.wav: audio file is missing'):
    sample.sample(workdir, 1, 0.1, str(tmp_path / 'out'), prompt=missing)
  corrupt = tmp_path / 'corrupt.wav'
  corrupt.write_bytes(b'RIFF....WAVEnot audio at all')
  with pytest.raises(audio_lib.AudioError, match='corrupt.wav: audio does not decode'):
    sample.sample(workdir, 1, 0.1, str(tmp_path / 'out'), prompt=str(corrupt))
  assert not (tmp_path / 'out').exists()


def test_midi_for_an_unconditioned_model_is_an_error(workdir, midi_file, tmp_path):
  with pytest.raises(ValueError, match='is not conditioned on MIDI frame features'):
    sample.sample(workdir, 1, 0.1, str(tmp_path), midi=midi_file)


def test_conditioned_model_needs_midi(midi_run, tmp_path):
  with pytest.raises(ValueError, match=r"conditioned on \('pianoroll', 'onsets', 'velocities'\); "
                     'pass --midi'):
    sample.sample(midi_run[0], 1, 0.1, str(tmp_path))


def test_midi_sets_the_length_and_conditions_the_audio(midi_run, midi_file, tmp_path):
  workdir, _ = midi_run
  a = sample.sample(workdir, 1, None, str(tmp_path / 'a'), midi=midi_file)[0]
  assert sf.info(a).frames == 8000  # the MIDI's length
  other = str(tmp_path / 'other.mid')
  midi_lib.write_midi(other, midi_lib.make_notes([0.0], [0.5], [40], [30]))
  b = sample.sample(workdir, 1, 0.5, str(tmp_path / 'b'), midi=other)[0]
  c = sample.sample(workdir, 1, 0.5, str(tmp_path / 'c'), midi=other)[0]
  read = lambda p: sf.read(p, dtype='int16')[0]
  np.testing.assert_array_equal(read(b), read(c))  # same seed, same MIDI
  assert not np.array_equal(read(a), read(b))  # the MIDI reaches the model
  with pytest.raises(midi_lib.MidiError, match='missing.mid: MIDI file is missing'):
    sample.sample(workdir, 1, 0.1, str(tmp_path / 'd'), midi=str(tmp_path / 'missing.mid'))


def test_midi_features_match_the_training_batches(midi_run, maestro_dir):
  """Conditioning from a MIDI file equals what the trainer fed for the same audio."""
  _, config = midi_run
  c = config.input.copy_and_resolve_references()
  c.split = 'validation'
  source, _ = pipeline.load_source(c)
  record = next(source[i] for i in range(len(source)) if source[i]['start_sample'] == 0)
  midi_path = os.path.join(maestro_dir, record['midi_filename'].decode())
  model = models.create(config)
  cond = sample.midi_features(config, model, midi_path, 16000)
  batch = {k: np.asarray(record[k])[None] for k in ('audio', 'pianoroll', 'onsets', 'velocities')}
  for k in model.conditions:
    np.testing.assert_array_equal(cond[k], batch[k])
  local = np.asarray(model.conditioning(cond)['local'])
  expected = np.asarray(model.conditioning(batch)['local'])  # as the loss transforms a batch
  assert local.shape == expected.shape == (1, 32, 264)
  np.testing.assert_array_equal(local, expected)


def test_cli_writes_files_and_reports_errors_in_one_line(workdir, tmp_path):
  env = dict(os.environ, XLA_FLAGS='')
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.sample', f'--workdir={workdir}', '--num_samples=1',
       '--seconds=0.2', f'--out={tmp_path}', '--seed=1'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, check=True)
  assert 'realtime factor' in out.stdout
  assert sf.info(str(tmp_path / 'step4_seed1_000.wav')).frames == 3200
  out = subprocess.run(
      [sys.executable, '-m', 'experiments.sample', f'--workdir={tmp_path / "none"}',
       f'--out={tmp_path}', '--seconds=1'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
  assert out.returncode == 1 and 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith('sample: ')
  assert 'holds no checkpoint' in out.stderr.strip().splitlines()[-1]
