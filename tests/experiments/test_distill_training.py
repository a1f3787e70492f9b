"""Distillation in the trainer (experiments/train_distill.py): the teacher loaded from its
workdir, the sharded loss equal to one device's, a falling KL on the embedded corpus, resume
after SIGKILL, vocoding through experiments/sample.py, and the one-line errors."""

import jax
import numpy as np
import pytest
import soundfile as sf

from data import pipeline
from experiments import checkpoint
from experiments import sample
from experiments import train
from experiments import train_distill
from experiments.configs import common
from tests.conftest import assert_sharded_loss_equals_one_device
from tests.conftest import config_path
from tests.conftest import kill_and_resume
from tests.conftest import metric_over_steps
from tests.conftest import no_evals
from tests.conftest import train_step_of

STUDENTS = ('parallel_wavenet', 'clarinet')
TEACHER = {'parallel_wavenet': 'mixture', 'clarinet': 'gaussian'}
SMALL = {'input.crop_samples': 1024, 'microbatches': 1, 'log_every_steps': 2,
         'checkpoint.every_steps': 2, 'optim.warmup_steps': 2}


def _tiny(spec: str, model: dict, steps: int, **overrides):
  """The config `spec` with `model` updates, 2-frame crops, no evaluators, `steps` steps."""
  c = common.load(spec)
  with c.unlocked():
    no_evals(c)
    c.model.update(model)
  c.update_from_flattened_dict({**SMALL, 'total_steps': steps, **overrides})
  return c


def tiny_student(name: str, **overrides):
  c = _tiny(config_path(name) + ':runlocal', dict(flow_layers=(2, 2), channels=8), 4,
            **overrides)
  with c.unlocked():
    c.teacher.model.update(num_layers=2, residual_channels=8, gate_channels=16,
                           skip_channels=8, num_mixtures=2)
  return c


@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
  """{student: the workdir of a 4-step tiny teacher of its kind on the embedded corpus}."""
  out = {}
  for name, output in TEACHER.items():
    c = _tiny(config_path('wavenet') + f':mel,teacher={output},runlocal',
              dict(num_layers=2, residual_channels=8, gate_channels=16, skip_channels=8,
                   num_mixtures=2), 4)
    out[name] = str(tmp_path_factory.mktemp(f'teacher_{output}'))
    train.train_and_evaluate(c, out[name])
  return out


@pytest.mark.parametrize('name', STUDENTS)
def test_sharded_loss_and_gradients_equal_one_device(name):
  assert_sharded_loss_equals_one_device(lambda mesh: tiny_student(name, mesh=mesh))


@pytest.mark.slow
@pytest.mark.parametrize('name', STUDENTS)
def test_kl_falls_on_the_embedded_corpus(name, teachers):
  """20 steps: the mean KL of the last 5 is below half that of the first 5."""
  c = tiny_student(name, total_steps=20, teacher_workdir=teachers[name],
                   **{'optim.learning_rate': 3e-3, 'optim.warmup_steps': 5})
  c, teacher = train_distill.with_teacher(c)
  kl = metric_over_steps(c, *train_step_of(c, train_distill.init_fn_with(teacher)), 'kl', 20)
  assert np.mean(kl[-5:]) < 0.5 * np.mean(kl[:5]), kl


@pytest.mark.slow
def test_killed_distillation_resumes_bit_identically(teachers, tmp_path):
  flags_ = [f'--config.{k}={v}' for k, v in {
      **SMALL, 'model.flow_layers': '(2,2)', 'model.channels': 8,
      'teacher_workdir': teachers['clarinet'], 'evals.validation.every_steps': 0,
      'evals.sample.every_steps': 0, 'evals.resynthesis.every_steps': 0, 'total_steps': 8,
      'checkpoint.keep': 20}.items()]
  a, b, _ = kill_and_resume(tmp_path, config_path('clarinet') + ':runlocal', flags_, 8,
                            trainer='experiments.train_distill')
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_student_trains_from_its_teacher_and_vocodes_through_sample(teachers, tmp_path):
  """train_distill loads the teacher run (its saved config in place of config.teacher, its
  parameters frozen in the state), runs the evaluators, and sample.py vocodes a wav."""
  c = tiny_student('parallel_wavenet', total_steps=2,
                   teacher_workdir=teachers['parallel_wavenet'])
  with c.unlocked():
    c.teacher.model.num_layers = 5  # replaced by the teacher run's own config
  c.evals.resynthesis.update(every_steps=2, clips=1, seconds=0.25, griffin_lim_iters=2)
  c.evals.validation.update(every_steps=2, batches=1, batch_size=8, crop_samples=1024)
  workdir = str(tmp_path / 'student')
  last = train_distill.train_and_evaluate(c, workdir)
  assert np.isfinite(last['kl']) and np.isfinite(last['resynthesis_log_mel_l1'])
  assert last['validation_teacher_bits_data'] > 0 and last['validation_teacher_bits_student'] > 0
  state, saved = checkpoint.load(workdir)
  teacher_state, _ = checkpoint.load(teachers['parallel_wavenet'])
  assert saved.teacher.model.num_layers == 2
  for a, b in zip(jax.tree.leaves(state['model_state']['teacher']),
                  jax.tree.leaves(teacher_state['params'])):
    np.testing.assert_array_equal(a, b)  # loaded, and frozen through the steps
  v = c.input.copy_and_resolve_references()
  v.split = 'validation'
  source, _ = pipeline.load_source(v)
  wav = str(tmp_path / 'held_out.wav')
  sf.write(wav, source[0]['audio'][:4000], 16000, subtype='PCM_16')
  paths = sample.sample(workdir, 2, None, str(tmp_path / 'out'), mel_from=wav)
  a, rate = sf.read(paths[0], dtype='int16')
  assert rate == 16000 and len(a) == 8 * 512
  assert not np.array_equal(a, sf.read(paths[1], dtype='int16')[0])


def test_errors_are_one_line(tmp_path):
  c = tiny_student('parallel_wavenet')
  with pytest.raises(ValueError, match=r"'parallel_wavenet' is a distillation student: train "
                     'it with experiments/train_distill.py'):
    train.train_and_evaluate(c, str(tmp_path / 'a'))
  with pytest.raises(ValueError, match='config.teacher_workdir is not set'):
    train_distill.train_and_evaluate(c, str(tmp_path / 'a'))
  c.teacher_workdir = str(tmp_path / 'empty')
  with pytest.raises(ValueError, match=r'config.teacher_workdir=.*empty.*: no checkpoint'):
    train_distill.train_and_evaluate(c, str(tmp_path / 'a'))
  w = _tiny(config_path('wavenet') + ':runlocal', {}, 2)
  with pytest.raises(ValueError, match="'wavenet' is not a distillation student"):
    train_distill.train_and_evaluate(w, str(tmp_path / 'b'))
