"""A VQ-VAE hierarchy in the jobs (experiments/train_vqvae.py): levels trained in sequence over
the frozen levels from their workdirs, a prior over the top, exact resume after SIGKILL (EMA
codebooks and frozen levels included), sampling, continuation and reconstruction through
experiments/sample.py, and the description_length evaluator."""

import jax
import numpy as np
import pytest
import soundfile as sf

from experiments import checkpoint
from experiments import evaluate
from experiments import sample
from experiments import train_vqvae
from tests.conftest import VQVAE_TINY_DECODER
from tests.conftest import VQVAE_TINY_LEVEL
from tests.conftest import kill_and_resume
from tests.conftest import tiny_vqvae

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """{'level1', 'level2', 'prior'}: workdirs of a tiny 2-level hierarchy and its prior."""
  root = tmp_path_factory.mktemp('vqvae')
  out, below = {}, None
  for name, variant in (('level1', 'level=1'), ('level2', 'level=2'),
                        ('prior', 'prior,levels=2')):
    out[name] = str(root / name)
    train_vqvae.train_and_evaluate(tiny_vqvae(variant, below_workdir=below), out[name])
    below = out[name]
  return out


def test_levels_carry_the_frozen_levels_they_were_trained_over(runs):
  level1, _ = checkpoint.load(runs['level1'])
  level2, config2 = checkpoint.load(runs['level2'])
  prior, config = checkpoint.load(runs['prior'])
  assert sorted(config.levels) == ['level1', 'level2'] and sorted(config2.levels) == ['level1']
  frozen = prior['model_state']['levels']
  for a, b in zip(jax.tree.leaves(frozen['level1']),
                  jax.tree.leaves({'params': level1['params'], 'vq': level1['model_state']['vq']})):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(frozen['level2']),
                  jax.tree.leaves({'params': level2['params'], 'vq': level2['model_state']['vq']})):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match=r'holds level 1; this run trains over level 2'):
    train_vqvae.with_levels(tiny_vqvae('level=3', below_workdir=runs['level1']))
  with pytest.raises(ValueError, match=r"holds a 'vqvae_prior' run"):
    train_vqvae.with_levels(tiny_vqvae('level=2', below_workdir=runs['prior']))


def test_a_killed_level_resumes_bit_identically(runs, tmp_path):
  """Level 2 over level 1, killed after its checkpoint at step 4 of 8: the resumed run ends
  with the straight run's parameters, optimiser, EMA codebook and frozen level."""
  flags_ = [f'--config.below_workdir={runs["level1"]}', '--config.total_steps=8',
            '--config.checkpoint.every_steps=2', '--config.input.crop_samples=4096',
            '--config.microbatches=1', '--config.evals.validation.every_steps=0',
            '--config.checkpoint.async_save=False']
  flags_ += [f'--config.model.{k}={v}' for k, v in VQVAE_TINY_LEVEL.items()]
  flags_ += [f'--config.model.decoder.{k}={v}' for k, v in VQVAE_TINY_DECODER.items()]
  straight, killed, _ = kill_and_resume(tmp_path, 'experiments/configs/vqvae.py:level=2,runlocal',
                                        flags_, total=8, trainer='experiments.train_vqvae')
  assert 'vq' in straight['model_state'] and 'levels' in straight['model_state']
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(killed)):
    np.testing.assert_array_equal(a, b)


def test_the_hierarchy_samples_continues_and_reconstructs(runs, tmp_path):
  files = sample.sample(runs['prior'], 2, 0.25, str(tmp_path / 'new'),
                        temperature=(1.0, 0.9, 1.0))
  assert len(files) == 2
  for f in files:
    x, sr = sf.read(f)
    assert sr == 16000 and x.shape == (4000,) and np.all(np.isfinite(x))
  prompt = str(tmp_path / 'prompt.wav')
  sf.write(prompt, 0.3 * np.sin(np.arange(8000) * 0.05), 16000)
  continued = sample.sample(runs['prior'], 1, 0.1, str(tmp_path / 'continued'), prompt=prompt)
  assert sf.read(continued[0])[0].shape == (8000 + 1600,)  # the prompt, then what follows
  rebuilt = sample.sample(runs['level2'], 1, 0.2, str(tmp_path / 'rebuilt'), prompt=prompt)
  assert sf.read(rebuilt[0])[0].shape == (8000 + 3200,)  # the prompt, then its reconstruction
  unigram = sample.sample(runs['level2'], 1, 0.2, str(tmp_path / 'unigram'))
  assert sf.read(unigram[0])[0].shape == (3200,)  # level-2 codes from its usage, rendered
  with pytest.raises(ValueError, match='expected 3, one per stage'):
    sample.sample(runs['prior'], 1, 0.1, str(tmp_path / 'bad'), temperature=(1.0, 1.0))


def test_the_description_length_sums_the_levels_and_the_prior(runs):
  record = evaluate.evaluate_checkpoint(runs['prior'], split='validation',
                                        eval_name='description_length', crop_samples=4096,
                                        batch_size=8)
  total = record['prior_bits_per_audio_sample'] + sum(
      record[f'level{i}_bits_per_audio_sample'] for i in (1, 2))
  assert record['total_bits_per_audio_sample'] == pytest.approx(total)
  assert record['level2_bits_per_audio_sample'] == pytest.approx(
      record['level2_bits_per_code'] / 8)
  assert record['prior_bits_per_audio_sample'] == pytest.approx(
      record['prior_bits_per_code'] / 32)
  assert record['level1_perplexity'] > 2.  # the trained codebook is not collapsed to a code
  assert record['prior_receptive_field_seconds'] == pytest.approx(16 * 32 / 16000)
