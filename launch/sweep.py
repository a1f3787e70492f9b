#!/usr/bin/env python3
r"""Expands a config's `sweep()` into training runs, one per override dict, for any launcher.

    python launch/sweep.py CONFIG=experiments/configs/wavenet.py:runlocal WORKDIR=/tmp/sweep \
        [LAUNCHER=local|tpu_pod|slurm|none] [DRY_RUN=1] [ONLY=0,2] [LAUNCHER KEYS ...] \
        [-- EXTRA TRAIN FLAGS]

The config file's `sweep()` returns a list of dicts of config overrides ({'optim.learning_rate':
3e-3, ...}). Run i trains `CONFIG` with those overrides as --config.KEY=VALUE flags in
WORKDIR/<i>_<key>=<value>_... . Every override key is checked against the config before any
run starts, so a typo stops the sweep instead of one run.

  LAUNCHER  local (default): runs one after another through launch/local.sh; slurm: submits
            each with `sbatch launch/slurm.sbatch` (they queue side by side); tpu_pod: runs one
            after another through launch/tpu_pod.sh; none: plain `python -m experiments.train`
            in this process's environment, one after another.
  DRY_RUN   1: print the commands, run nothing.
  ONLY      comma-separated run indices to launch (default all).
  Other KEY=VALUE arguments go to the launcher (PROCESSES=2 DEVICES=2 for local, NAME=... for
  tpu_pod, PER=node for slurm); flags after `--` go to every run.
"""

import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments.configs import common  # pylint: disable=g-import-not-at-top,wrong-import-position

LAUNCHERS = ('local', 'tpu_pod', 'slurm', 'none')
_OWN_KEYS = ('CONFIG', 'WORKDIR', 'LAUNCHER', 'DRY_RUN', 'ONLY')


def parse_args(argv: list[str]) -> tuple[dict, list[str], list[str]]:
  """(this script's KEY=VALUE settings, the launcher's KEY=VALUE arguments, extra flags)."""
  own, launcher, extra = {}, [], []
  for i, arg in enumerate(argv):
    if arg == '--':
      extra = argv[i + 1:]
      break
    key, eq, value = arg.partition('=')
    if not eq or not key.isupper():
      raise ValueError(f'argument {arg!r}: expected KEY=VALUE (flags for the runs go after --)')
    if key in _OWN_KEYS:
      own[key] = value
    else:
      launcher.append(arg)
  for key in ('CONFIG', 'WORKDIR'):
    if not own.get(key):
      raise ValueError(f'{key}= is required')
  own.setdefault('LAUNCHER', 'local')
  if own['LAUNCHER'] not in LAUNCHERS:
    raise ValueError(f'LAUNCHER={own["LAUNCHER"]}: expected one of {", ".join(LAUNCHERS)}')
  return own, launcher, extra


def load_sweep(spec: str) -> list[dict]:
  """The override dicts of the config file's sweep(), each key checked against the config."""
  path = spec.partition(':')[0]
  config = common.load(spec)  # also checks the file and its argument
  module = common.load_module(path)
  if not hasattr(module, 'sweep'):
    raise ValueError(f'{path} has no sweep() function')
  runs = list(module.sweep())
  if not runs:
    raise ValueError(f'{path}: sweep() returned no runs')
  for i, overrides in enumerate(runs):
    for key in overrides:
      node = config
      for part in key.split('.'):
        if not hasattr(node, 'keys') or part not in node:
          raise ValueError(f'{path}: sweep() run {i} overrides {key!r}, which the config does '
                           'not have')
        node = node[part]
  return runs


def run_name(i: int, overrides: dict) -> str:
  parts = [f'{k.rsplit(".", 1)[-1]}={v}' for k, v in overrides.items()]
  return '_'.join([str(i)] + parts).replace('/', '-').replace(' ', '')


def commands(own: dict, launcher: list[str], extra: list[str], runs: list[dict]) -> list[list]:
  """The command of each run, in order."""
  only = None
  if own.get('ONLY'):
    only = {int(x) for x in own['ONLY'].split(',')}
    if not only <= set(range(len(runs))):
      raise ValueError(f'ONLY={own["ONLY"]}: the sweep has runs 0..{len(runs) - 1}')
  out = []
  for i, overrides in enumerate(runs):
    if only is not None and i not in only:
      continue
    workdir = os.path.join(own['WORKDIR'], run_name(i, overrides))
    flags = [f'--config={own["CONFIG"]}', f'--workdir={workdir}']
    flags += [f'--config.{k}={v}' for k, v in overrides.items()] + extra
    kind = own['LAUNCHER']
    if kind == 'local':
      cmd = [os.path.join(ROOT, 'launch', 'local.sh'), *launcher, 'train', *flags]
    elif kind == 'tpu_pod':
      cmd = [os.path.join(ROOT, 'launch', 'tpu_pod.sh'), *launcher, 'train', *flags]
    elif kind == 'slurm':
      name = f'--job-name=sweep{i}'
      cmd = ['sbatch', name, os.path.join(ROOT, 'launch', 'slurm.sbatch'), *launcher, 'train',
             *flags]
    else:
      if launcher:
        raise ValueError(f'LAUNCHER=none takes no launcher keys; got {" ".join(launcher)}')
      cmd = [sys.executable, '-m', 'experiments.train', *flags]
    out.append(cmd)
  return out


def main(argv: list[str]) -> int:
  try:
    own, launcher, extra = parse_args(argv)
    runs = load_sweep(own['CONFIG'])
    cmds = commands(own, launcher, extra, runs)
  except (ValueError, FileNotFoundError) as e:
    print(f'sweep.py: {e}', file=sys.stderr)
    return 2
  print(f'sweep.py: {len(cmds)} runs of {own["CONFIG"]}')
  for cmd in cmds:
    print(shlex.join(cmd), flush=True)
    if own.get('DRY_RUN') == '1':
      continue
    code = subprocess.call(cmd, cwd=ROOT)
    if code:
      print(f'sweep.py: run exited with status {code}; stopping the sweep', file=sys.stderr)
      return code
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
