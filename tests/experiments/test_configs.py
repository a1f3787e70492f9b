"""Experiment configs: plain Python (no JAX, grain or TFDS), locked, one source for data facts."""

import glob
import os
import subprocess
import sys

import pytest

from data import specs
from experiments.configs import common
import models
from tests.conftest import ROOT

HEAVY = ('jax', 'jaxlib', 'grain', 'tensorflow_datasets', 'flax', 'orbax')
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(ROOT, 'experiments', 'configs', '*.py')) if not p.endswith(('__init__.py',
                                                                             'common.py')))


def test_configs_and_the_sweep_launcher_import_no_backend():
  code = ('import sys\n'
          'from experiments.configs import common\n'
          f'for name in {CONFIGS!r}:\n'
          '  __import__(f"experiments.configs.{name}")\n'
          '  common.load(f"experiments/configs/{name}.py")\n'
          '  common.load(f"experiments/configs/{name}.py:runlocal")\n'
          'sys.argv = ["sweep.py", "CONFIG=experiments/configs/wavenet.py:runlocal",\n'
          '            "WORKDIR=/tmp/unused", "DRY_RUN=1", "LAUNCHER=none"]\n'
          'import runpy\n'
          'try:\n'
          '  runpy.run_path("launch/sweep.py", run_name="__main__")\n'
          'except SystemExit as e:\n'
          '  assert not e.code, e.code\n'
          f'heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})\n'
          'assert not heavy, heavy\n'
          'print("clean")\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0 and 'clean' in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_and_runlocal_builds_its_model(name):
  for arg in ('', ':runlocal'):
    c = common.load(os.path.join(ROOT, 'experiments', 'configs', f'{name}.py{arg}'))
    assert c.model_name in models.families()
    models.create(c)  # the data facts agree with the config
    for entry in c.evals.values():
      assert 'type' in entry and 'every_steps' in entry


def test_runlocal_settings_are_shared():
  """Every family's runlocal reads the same data as WaveNet's (so bits per sample compare
  within a kind: codes or float audio; the GANs in the papers' clips and segments), and the mel
  vocoders the mel of WaveNet's mel,runlocal (so the spectral distances compare). Models of
  events read the embedded corpus's MIDI, translators its multi-instrument rendering."""
  load = lambda spec: common.load(os.path.join(ROOT, 'experiments', 'configs', spec)).input
  shared = ('dataset', 'manual_dir', 'data_dir', 'split', 'batch_size', 'crop_samples', 'seed',
            'shuffle')
  inputs = {name: load(f'{name}.py:runlocal') for name in CONFIGS}
  events = {name: i for name, i in inputs.items() if specs.is_events(i)}
  assert sorted(events) == ['music_transformer']
  assert all(i.manual_dir is None and i.split == 'train' for i in events.values())
  # Translators read the embedded multi-instrument corpus (every score by every instrument).
  translators = {name: i for name, i in inputs.items() if i.get('instruments')}
  assert sorted(translators) == ['blow', 'umt']
  assert all((i.dataset, i.manual_dir, i.split, i.batch_size) == ('16k', None, 'train', 8)
             for i in translators.values())
  inputs = {name: i for name, i in inputs.items() if name not in {*events, *translators}}
  own_crops = {'specgan': (8, 16384), 'wavegan': (8, 16384),  # (batch, crop)
               'melgan': (2, 8192), 'hifigan': (2, 8192),
               'samplernn': (8, 2056),  # 8 codes of context, then WaveNet's 2,048 predicted
               'onsets_frames': (8, 32768)}  # 2 s: 64 frames for its BiLSTMs
  first = {k: inputs['wavenet'][k] for k in shared}
  sized = ('batch_size', 'crop_samples')
  assert all({k: i[k] for k in shared} == first for n, i in inputs.items()
             if n not in own_crops), inputs
  assert all({k: i[k] for k in shared if k not in sized} ==
             {k: v for k, v in first.items() if k not in sized} and
             (i.batch_size, i.crop_samples) == own_crops[n]
             for n, i in inputs.items() if n in own_crops)
  assert first['manual_dir'] is None and first['crop_samples'] == 2048
  wavenet_mel = load('wavenet.py:mel,runlocal').mel.to_dict()
  vocoders = [name for name, i in inputs.items()
              if 'mel' in i.frame_features and name != 'onsets_frames']  # it has the paper's
  assert sorted(vocoders) == ['clarinet', 'flowavenet', 'hifigan', 'melgan', 'parallel_wavenet',
                              'waveflow', 'waveglow']
  assert all(inputs[f].mel.to_dict() == wavenet_mel for f in vocoders)


def test_a_config_typo_is_an_error():
  c = common.load(os.path.join(ROOT, 'experiments', 'configs', 'wavenet.py:runlocal'))
  with pytest.raises(AttributeError):
    c.evals.validation.every_step = 3  # locked: no new keys


@pytest.mark.parametrize('arg', ['mel', 'mel,runlocal', 'midi,runlocal'])
def test_conditioned_variants_take_their_widths_from_the_input(arg):
  c = common.load(os.path.join(ROOT, 'experiments', 'configs', f'wavenet.py:{arg}'))
  model = models.create(c)
  want = c.input.mel.n_mels if 'mel' in arg else 3 * 88
  assert model.local_features == want and model.conditions == c.input.frame_features
  assert (c.input.frame_features == ('mel',)) == ('mel' in arg)


@pytest.mark.parametrize('output', ['mixture', 'gaussian'])
def test_teacher_variants_model_16_bit_linear_audio(output):
  for arg in (f'mel,teacher={output}', f'mel,teacher={output},runlocal'):
    c = common.load(os.path.join(ROOT, 'experiments', 'configs', f'wavenet.py:{arg}'))
    model = models.create(c)
    assert (model.output, model.encoding, model.num_classes) == (output, 'linear', 2 ** 16)
  with pytest.raises(ValueError, match=r"teacher='mixture': expected one of mixture, gaussian, "
                     'with mel'):
    common.load(os.path.join(ROOT, 'experiments', 'configs', 'wavenet.py:teacher=mixture'))


def test_midi_and_mel_together_is_an_error():
  with pytest.raises(ValueError, match='midi and mel'):
    common.load(os.path.join(ROOT, 'experiments', 'configs', 'wavenet.py:midi,mel'))
