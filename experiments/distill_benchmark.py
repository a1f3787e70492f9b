"""`python -m experiments.benchmark --what=distill`: the distilled students' synthesis speed
beside their teachers' cached samplers, and the distillation step's throughput.

Parallel WaveNet and ClariNet at their paper configs and `runlocal`: synthesis (`generate` of
one stream from random mels, `--distill_paper_seconds` / `--distill_seconds`, one window) in
kHz and as a multiple of real time; beside each, its teacher's cached sampler
(`wavenet.py:mel,teacher=...`, `--distill_teacher_seconds`) and the student's speed as a
multiple of the teacher's. The runlocal students' training samples/s: one jitted step of
experiments/train_distill.py (train.py's step; the teacher's forward and backward inside it)
on a random batch of their runlocal config. Random parameters throughout (speed does not depend
on their values); flow_benchmark's `synthesis` and `training` do the timing, `--repeats`
windows, the median reported.
"""

from absl import flags
from absl import logging
import jax

from experiments import flow_benchmark

STUDENTS = (('parallel_wavenet', 'mixture'), ('clarinet', 'gaussian'))


def define_flags() -> None:
  """The --what=distill flags of experiments/benchmark.py."""
  flags.DEFINE_float('distill_seconds', 1.0, 'distill: seconds synthesised by runlocal students.')
  flags.DEFINE_float('distill_paper_seconds', 0.5,
                     'distill: seconds synthesised by the paper students.')
  flags.DEFINE_float('distill_teacher_seconds', 0.1,
                     'distill: seconds of each teacher\'s cached sampler.')
  flags.DEFINE_integer('distill_train_steps', 2, 'distill: training steps per timed window.')


def bench(median_time) -> dict:
  f = flags.FLAGS
  figures = measure(f.distill_seconds, f.distill_paper_seconds, f.distill_teacher_seconds,
                    f.distill_train_steps, f.repeats, median_time)
  if jax.process_index() == 0:
    print(flow_benchmark.table(figures['distill']))
  return figures


def measure(seconds: float, paper_seconds: float, teacher_seconds: float, steps: int,
            repeats: int, median_time, args=('', 'runlocal')) -> dict:
  """{'distill': {label: figures}}: '<student>[:runlocal]' with 'over_teacher' (its synthesis
  kHz over its teacher's, and at runlocal the training figures unless `steps` is 0), and
  'wavenet:mel,teacher=<output>[,runlocal]'; `args` the configs' variants measured (paper:
  '')."""
  out = {}
  for name, output in STUDENTS:
    for arg in args:
      teacher_label = f'wavenet:mel,teacher={output}' + (f',{arg}' if arg else '')
      teacher = flow_benchmark.synthesis(flow_benchmark._config(  # pylint: disable=protected-access
          'wavenet', teacher_label.partition(':')[2]), teacher_seconds, 1, repeats, median_time)
      config = flow_benchmark._config(name, arg)  # pylint: disable=protected-access
      figures = flow_benchmark.synthesis(config, seconds if arg else paper_seconds, 1, repeats,
                                         median_time)
      figures['over_teacher'] = figures['synthesis_khz'] / teacher['synthesis_khz']
      if arg and steps:
        figures.update(flow_benchmark.training(config, None, None, steps, repeats,
                                               median_time))
      label = f'{name}:{arg}' if arg else name
      logging.info('%s: %.1f kHz, %.2f x real time, %.0f x its teacher', label,
                   figures['synthesis_khz'], figures['realtime_factor'],
                   figures['over_teacher'])
      out[label], out[teacher_label] = figures, teacher
  return {'distill': out}
