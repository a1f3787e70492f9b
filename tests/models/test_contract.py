"""The family contract of models/__init__.py, checked for every family models.families() finds,
and the data facts that models.create derives."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from data import audio as audio_lib
from data import midi
from data import specs
from experiments import benchmark
from experiments.configs import common
import models
from tests.conftest import config_path


# Families whose runlocal config is a variant of another family's file.
VARIANTS = {'vqvae': 'vqvae.py:level=1,runlocal', 'vqvae_prior': 'vqvae.py:prior,levels=2,runlocal'}


def _runlocal(name: str):
  spec = VARIANTS.get(name, f'{name}.py:runlocal')
  file, _, arg = spec.partition(':')
  return common.load(config_path(file[:-3]) + ':' + arg)


@pytest.mark.parametrize('name', models.families())
def test_family_keeps_the_contract(name):
  config = _runlocal(name)
  family, model = models.family(name), models.create(config)
  # Clip models (WaveGAN, SpecGAN) read clips of their own length; the others 512 samples.
  samples = getattr(model, 'clip_samples', 512)
  batch = benchmark.random_batch(config.input, np.random.default_rng(0), 2, samples)
  variables = nn.unbox(family.init(model, jax.random.key(0), specs.zeros_batch(config.input, 1)))
  assert 'params' in variables

  loss, metrics, model_state = jax.jit(
      lambda v, b: family.loss(model, v, b, jax.random.key(1)))(variables, batch)
  assert loss.shape == () and np.isfinite(loss)
  assert isinstance(model_state, dict)
  assert metrics['weight'] > 0
  if hasattr(family, 'discriminator_loss'):  # a GAN: the contract's loss is the generator's
    assert {'g_loss', 'd_loss'} <= set(metrics)
  if 'bits_per_sample' in metrics:  # a likelihood family: nats and bits agree
    np.testing.assert_allclose(metrics['bits_per_sample'], metrics['nll'] / np.log(2), rtol=1e-6)

  if hasattr(family, 'transcribe'):  # a transcriber: notes per row in place of audio
    notes = family.transcribe(model, variables, batch['mel'])
    assert len(notes) == 2 and all(isinstance(n, midi.Notes) for n in notes)
    assert not hasattr(family, 'generate')
    return
  if hasattr(family, 'translate'):  # a translator: each row to another instrument
    wave = batch['audio'] if config.input.encoding == 'float' else audio_lib.decode(
        np.asarray(batch['audio']), config.input.encoding, config.input.bits)
    out = np.asarray(family.translate(model, variables, jax.random.key(2), wave,
                                      np.array([0, 1]), np.array([2, 3]), temperature=1.0))
    assert out.shape == wave.shape and out.dtype == np.float32 and np.all(np.abs(out) <= 1)
    try:
      family.generate(model, variables, jax.random.key(2), 50, cond={
          k: batch[k] for k in model.conditions})
    except ValueError:  # a translator that draws only from a source (the UMT)
      return
  cond = {k: batch[k] for k in model.conditions}
  draw = lambda **kw: list(family.generate(model, variables, jax.random.key(2), 50, cond=cond,
                                           **kw))
  chunks = draw(batch=2, chunk_samples=25)
  assert [c.shape for c in chunks] == [(2, 25), (2, 25)]
  audio = np.concatenate(chunks, axis=1)
  assert audio.dtype == np.float32 and np.all(np.abs(audio) <= 1)
  assert not np.array_equal(audio[0], audio[1])
  # Stream 1 alone draws what it drew beside stream 0 (chunking: each family's own tests).
  one = {k: v[1:] for k, v in cond.items()}
  alone = np.concatenate(list(family.generate(model, variables, jax.random.key(2), 50, batch=1,
                                              cond=one, first_stream=1, chunk_samples=25)),
                         axis=1)
  np.testing.assert_array_equal(alone, audio[1:])


def test_create_derives_the_data_facts():
  c = common.load(config_path('wavenet') + ':midi,runlocal')
  m = models.create(c)
  assert (m.hop_length, m.local_features, m.num_classes, m.encoding) == (512, 264, 256, 'mu_law')
  c.input.dataset = '24k'  # hop 768: the model follows the data
  c.input.bits = 7
  c.input.encoding = 'linear'
  c.input.crop_samples = 3 * 768
  m = models.create(c)
  assert (m.hop_length, m.num_classes, m.encoding) == (768, 128, 'linear')


def test_a_model_key_that_disagrees_with_the_data_is_one_line():
  c = common.load(config_path('wavenet') + ':midi,runlocal')
  c.input.dataset = '24k'
  with c.unlocked():
    c.model.hop_length = 512
  with pytest.raises(ValueError, match=r"config.model.hop_length=512, but config.input \(dataset "
                     r"'24k'.*gives 768; leave config.model.hop_length out"):
    models.create(c)
  c = common.load(config_path('wavenet') + ':runlocal')
  with c.unlocked():
    c.model.num_classes = 65536
  with pytest.raises(ValueError, match='config.model.num_classes=65536.*gives 256'):
    models.create(c)


def test_conditioning_keys_must_be_read_from_the_data():
  c = common.load(config_path('wavenet') + ':midi,runlocal')
  c.input.frame_features = ('pianoroll',)
  with pytest.raises(ValueError, match=r"local_keys=\('pianoroll', 'onsets', 'velocities'\): "
                     r"\['onsets', 'velocities'\] not in config.input.frame_features"):
    models.create(c)


def test_code_models_refuse_float_audio():
  c = common.load(config_path('wavenet') + ':runlocal')
  c.input.encoding = 'float'
  with pytest.raises(ValueError, match=r"model.encoding='float' \(from config.input.encoding\)"):
    models.create(c)


def test_unknown_family_names_the_families():
  c = common.load(config_path('wavenet') + ':runlocal')
  c.model_name = 'nope'
  with pytest.raises(ValueError, match=r"config.model_name='nope': expected one of") as e:
    models.create(c)
  assert all(n in str(e.value) for n in models.families())
  with pytest.raises(ValueError, match='layers'):  # shared code is not a family
    models.family('layers')
