"""The benchmark job runs and writes the figures it promises (no timing is asserted)."""

import json
import os
import subprocess
import sys

from experiments import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_wavenet_flops_per_sample_by_hand():
  # Per layer: dilated conv 2 x 64 -> 128, residual 64 -> 64, skip 64 -> 64 MACs; head
  # 64 -> 64 -> 256; stem 2 x 256 -> 64. Training = 3 x forward, 2 FLOPs per MAC.
  macs = 30 * (2 * 64 * 128 + 64 * 64 + 64 * 64) + 64 * 64 + 64 * 256 + 2 * 256 * 64
  assert benchmark.wavenet_train_flops_per_sample() == 6 * macs


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
