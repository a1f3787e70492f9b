"""Shared fixtures. JAX sees 8 CPU devices so that tests can build real meshes."""

import os

# Before anything imports jax.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest  # pylint: disable=g-import-not-at-top

from data import corpus  # pylint: disable=g-import-not-at-top
from data import maestro  # pylint: disable=g-import-not-at-top

# Small segments keep the fixtures fast: 1 s at 16 kHz, 32 frames of 500 samples.
TEST_CONFIG = maestro.MaestroConfig.make(16000, 16000, 500)


@pytest.fixture(scope='session')
def maestro_dir(tmp_path_factory):
  """A MAESTRO-v3-format directory: 4 pieces (2 train, 1 validation, 1 test) of at most 4 s,
  stereo 16-bit at 44.1 and 48 kHz alternately, with sustain pedal."""
  out = tmp_path_factory.mktemp('maestro') / 'maestro-v3.0.0'
  corpus.write_corpus(out, num_pieces=4, max_seconds=4.0, sample_rate=(44100, 48000),
                      source='procedural', num_workers=1)
  return str(out)


@pytest.fixture(scope='session')
def built(maestro_dir, tmp_path_factory):
  """The Maestro builder, prepared from `maestro_dir` with TEST_CONFIG."""
  return maestro.prepare(TEST_CONFIG, manual_dir=maestro_dir,
                         data_dir=str(tmp_path_factory.mktemp('tfds')))
