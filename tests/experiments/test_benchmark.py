"""The benchmark job runs and writes the figures it promises (no timing is asserted)."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import attention_benchmark
from experiments import benchmark
from experiments import distill_benchmark
from experiments import flow_benchmark
from experiments import gan_benchmark
from experiments import reference_benchmark
from experiments import train_gan
from models import attention

HAS_COMPILER = bool(shutil.which('c++') or shutil.which('g++'))  # builds the CPU kernels

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_wavenet_flops_per_sample_by_hand():
  # Per layer: dilated conv 2 x 64 -> 128, residual 64 -> 64, skip 64 -> 64 MACs; head
  # 64 -> 64 -> 256; stem 2 x 256 -> 64. Training = 3 x forward, 2 FLOPs per MAC.
  macs = 30 * (2 * 64 * 128 + 64 * 64 + 64 * 64) + 64 * 64 + 64 * 256 + 2 * 256 * 64
  assert benchmark.wavenet_train_flops_per_sample() == 6 * macs


def test_dense_in_chunks_is_dense_attention():
  q, k, v = (jax.random.normal(r, (1, 256, 2, 16)) for r in jax.random.split(jax.random.key(0), 3))
  np.testing.assert_allclose(attention_benchmark.dense_in_chunks(q, k, v, 64),
                             attention.dense(q, k, v),
                             atol=1e-5)
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))
  grads = [jax.grad(loss(f), argnums=(0, 1, 2))(q, k, v)
           for f in (lambda *a: attention_benchmark.dense_in_chunks(*a, 64), attention.dense)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_input_benchmark_writes_json(tmp_path):
  out = tmp_path / 'input.json'
  subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', '--what=input', f'--json={out}',
       '--dataset=sr16000_seg16000_hop500', '--corpus_pieces=3', '--batch_size=2',
       '--crop_samples=4000', '--worker_count=0', '--batches=2', '--repeats=2',
       '--prepare_workers=1'],
      cwd=ROOT, check=True, capture_output=True, timeout=300,
      env=dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu'))
  figures = json.loads(out.read_text())
  assert figures['machine']['cpu_count'] >= 1 and figures['machine']['backend'] == 'cpu'
  assert figures['corpus_pieces'] == 3 and figures['corpus_audio_s'] > 0
  for key in ('input_samples_per_s', 'preparation_audio_s_per_s', 'matmul_peak_gflops',
              'wavenet_30x64_samples_per_s_at_matmul_peak', 'input_headroom_over_wavenet_at_peak'):
    assert figures[key] > 0, key


def _run(tmp_path, what, *extra):
  out = tmp_path / f'{what}.json'
  subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', f'--what={what}', f'--json={out}',
       '--config=experiments/configs/wavenet.py:runlocal', '--config.input.crop_samples=512',
       '--config.model.num_layers=4', '--repeats=1', *extra],
      cwd=ROOT, check=True, capture_output=True, timeout=300,
      env=dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu'))
  return json.loads(out.read_text())


def test_train_benchmark_writes_json(tmp_path):
  figures = _run(tmp_path, 'train', '--steps=1')
  assert figures['config']['model']['num_layers'] == 4
  assert figures['train_batch_size'] == 8 and figures['train_crop_samples'] == 512
  # 4 layers: conv 2 x 32 -> 2 x 32, residual (3 layers) and skip 32 -> 32 / 64; head 64 -> 64
  # -> 256; x 2 FLOPs x 3 passes.
  macs = 4 * 64 * 64 + 3 * 32 * 32 + 4 * 32 * 64 + 64 * 64 + 64 * 256
  assert figures['train_flops_per_sample'] == 6 * macs
  for key in ('train_samples_per_s', 'train_gflops_per_s', 'train_fraction_of_matmul_peak'):
    assert figures[key] > 0, key
  lo, hi = figures['train_samples_per_s_range']
  assert lo <= figures['train_samples_per_s'] <= hi
  if figures['train_layers'] == 'kernel':  # the CPU kernel, built at install: both paths timed
    assert figures['train_jax_samples_per_s'] > 0
    assert figures['train_kernel_over_jax'] == pytest.approx(
        figures['train_samples_per_s'] / figures['train_jax_samples_per_s'])
  else:
    assert not HAS_COMPILER and figures['train_layers'] == 'jax'


def test_sampler_benchmark_writes_json(tmp_path):
  figures = _run(tmp_path, 'sampler', '--sampler_samples=40,10', '--naive_samples=3')
  assert figures['receptive_field'] == (1 + 2 + 4 + 8) + 1 + 1  # dilations, stem, itself
  for key in ('sampler_1_stream_samples_per_s', 'sampler_16_streams_samples_per_s',
              'naive_sampler_1_stream_samples_per_s', 'sampler_1_stream_realtime_factor'):
    assert figures[key] > 0, key
  lo, hi = figures['sampler_16_streams_samples_per_s_range']
  assert lo <= figures['sampler_16_streams_samples_per_s'] <= hi
  assert figures['machine']['cpu_count'] >= 1


def _reference_json(path, **arch):
  """A reference benchmark JSON (the form experiments/reference_benchmark.py describes)."""
  kwargs = dict(out_channels=256, layers=30, stacks=3, residual_channels=64, gate_channels=128,
                skip_out_channels=64, kernel_size=2, **arch)
  path.write_text(json.dumps({'date_utc': '2026-12-03T00:00:00Z', 'machine': {'nproc': 2},
                              'configs': {'L30_S3': {
                                  'wavenet_kwargs': kwargs,
                                  'train': {'samples_per_s': 20000.},
                                  'gen_1_stream': {'samples_per_s': 500.},
                                  'gen_16_streams': {'samples_per_s': 4000.}}}}))
  return str(path)


def test_reference_figures_sit_beside_ours_with_their_ratios(tmp_path):
  from experiments.configs import wavenet as wavenet_config
  peer = wavenet_config.get_config('peer')
  path = _reference_json(tmp_path / 'peer.json')
  out = reference_benchmark.figures(path, peer, 'sampler', {
      'sampler_1_stream_samples_per_s': 1000., 'sampler_16_streams_samples_per_s': 12000.})
  assert out['sampler_1_stream_samples_per_s_reference'] == 500.
  assert out['sampler_1_stream_samples_per_s_over_reference'] == 2.
  assert out['sampler_16_streams_samples_per_s_over_reference'] == 3.
  assert out['reference']['config'] == 'L30_S3'
  out = reference_benchmark.figures(path, peer, 'train', {'train_samples_per_s': 30000.})
  assert out['train_samples_per_s_over_reference'] == 1.5
  # Another network than the reference's, or a file of another form: one line naming both.
  with pytest.raises(ValueError, match=r'peer\.json times the network L30_S3.*wavenet\.py:peer'):
    reference_benchmark.figures(path, wavenet_config.get_config(), 'train', {})
  (tmp_path / 'bad.json').write_text('{"configs": {}}')
  with pytest.raises(ValueError, match=r"bad\.json: expected the reference benchmark's JSON"):
    reference_benchmark.figures(str(tmp_path / 'bad.json'), peer, 'train', {})


def test_spectral_benchmark_writes_json(tmp_path):
  out = tmp_path / 'spectral.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', '--what=spectral', f'--json={out}',
       '--spectral_seconds=0.25', '--spectral_batch=2', '--spectral_gl_batch=1',
       '--spectral_gl_iterations=2', '--repeats=1'],
      cwd=ROOT, check=True, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu'))
  figures = json.loads(out.read_text())
  assert figures['what'] == 'spectral' and 'config' not in figures
  assert figures['spectral_batch'] == 2 and figures['spectral_gl_iterations'] == 2
  assert list(figures['spectral']) == ['stft', 'mel', 'cqt', 'griffin_lim', 'pipeline_mel']
  for name, row in figures['spectral'].items():
    assert row['clips'] == (1 if name == 'griffin_lim' else 2), name
    for key in ('jax_s', 'librosa_s', 'jax_audio_s_per_s', 'librosa_audio_s_per_s',
                'jax_over_librosa'):
      assert row[key] > 0, (name, key)
    # pipeline_mel: crops of the mel runlocal config, 2,048 samples at 16 kHz.
    assert row['audio_s'] == row['clips'] * (0.128 if name == 'pipeline_mel' else 0.25)
  assert 'jax/librosa' in proc.stdout  # the table


def test_flow_benchmark_parts_measure_and_tabulate():
  """The pieces of --what=flow on the runlocal WaveGlow (the whole job compiles paper-size
  models: minutes): synthesis and training figures, Griffin-Lim's, the table."""
  config = flow_benchmark._config('waveglow', 'runlocal')  # pylint: disable=protected-access
  once = lambda fn, repeats: (fn(), 1.0)[1]  # one call, "1 s"
  synth = flow_benchmark.synthesis(config, 0.1, 2, 1, once)
  assert synth['synthesis_samples'] == 1536 and synth['synthesis_streams'] == 2  # 3 frames
  assert synth['synthesis_khz'] == 2 * 1536 / 1e3 and synth['parameters'] > 1e6
  fit = flow_benchmark.training(config, 2, 1024, 1, 1, once)
  assert fit['train_samples_per_s'] == 2 * 1024 and fit['train_crop_samples'] == 1024
  gl = flow_benchmark.griffin_lim(0.1, 1, 2, 1, once)
  assert gl['iterations'] == 2 and gl['synthesis_khz'] == 1536 / 1e3
  text = flow_benchmark.table({'waveglow:runlocal': {**synth, **fit}, 'griffin_lim': gl})
  assert '| waveglow:runlocal |' in text and '| griffin_lim | - |' in text


def test_gan_benchmark_parts_measure():
  """The pieces of --what=gan on runlocal configs (the whole job builds paper-size models):
  clip synthesis and the GAN trainer's throughput."""
  once = lambda fn, repeats: (fn(), 1.0)[1]  # one call, "1 s"
  config = flow_benchmark._config('wavegan', 'runlocal')  # pylint: disable=protected-access
  clips = gan_benchmark.clip_synthesis(config, 2, 1, once)
  assert clips['synthesis_khz'] == 2 * 16384 / 1e3 and clips['synthesis_streams'] == 2
  assert 0 < clips['parameters'] < 1e6  # the generator alone
  config = flow_benchmark._config('melgan', 'runlocal')  # pylint: disable=protected-access
  fit = flow_benchmark.training(config, 2, 1024, 1, 1, once, game=train_gan)
  assert fit['train_samples_per_s'] == 2 * 1024
  assert gan_benchmark._generator_parameters(config) < 1e6  # pylint: disable=protected-access


def test_distill_benchmark_measures_the_runlocal_students():
  """--what=distill's synthesis figures on the runlocal configs (the paper ones are the same
  code, larger): each student beside its teacher's cached sampler. (Its training figures are
  flow_benchmark.training's, tested above, on train.py's step.)"""
  once = lambda fn, repeats: (fn(), 1.0)[1]  # one call, "1 s"
  figures = distill_benchmark.measure(0.128, 0.128, 0.032, 0, 1, once, args=('runlocal',))
  out = figures['distill']
  assert set(out) == {'parallel_wavenet:runlocal', 'clarinet:runlocal',
                      'wavenet:mel,teacher=mixture,runlocal',
                      'wavenet:mel,teacher=gaussian,runlocal'}
  for name in ('parallel_wavenet', 'clarinet'):
    f = out[f'{name}:runlocal']
    assert f['synthesis_khz'] == 2048 / 1e3  # 0.128 s at 16 kHz, in whole 512-sample frames
    assert f['over_teacher'] == 2048 / 512
  assert '| clarinet:runlocal |' in flow_benchmark.table(out)
