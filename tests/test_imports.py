"""The project's modules import each other without cycles (lazy imports inside functions
included), so that any module can be read, imported and tested on its own."""

import ast
import os

from tests.conftest import ROOT

PACKAGES = ('data', 'experiments', 'models', 'launch')


def _modules() -> dict[str, str]:
  out = {}
  for package in PACKAGES:
    for d, _, files in os.walk(os.path.join(ROOT, package)):
      for f in files:
        if f.endswith('.py'):
          path = os.path.join(d, f)
          name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
          out[name.removesuffix('.__init__')] = path
  return out


def _imports(path: str, modules: dict) -> set[str]:
  """The project modules `path` imports anywhere in its body."""
  out = set()
  for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    out.update(n for n in names if n in modules)
  return out


def test_no_import_cycles():
  modules = _modules()
  graph = {m: _imports(p, modules) - {m} for m, p in modules.items()}
  # A package's __init__ importing its own submodules is how a package exports; not a cycle.
  graph = {m: {d for d in deps if not d.startswith(m + '.')} for m, deps in graph.items()}
  state, cycles = {}, []

  def visit(m, stack):
    state[m] = 'open'
    for d in sorted(graph[m]):
      if state.get(d) == 'open':
        cycles.append(stack[stack.index(d):] + [d])
      elif d not in state:
        visit(d, stack + [d])
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m, [m])
  assert not cycles, cycles
  assert 'experiments.train' not in graph['experiments.checkpoint']
  assert 'data.maestro' not in graph['data.corpus']


def test_jobs_define_their_flags_only_as_programs():
  """Importing a job (tests, notebooks, another job) claims no flag names."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('from absl import flags\n'
          'import data.prepare, data.corpus, experiments.benchmark, experiments.evaluate\n'
          'import experiments.sample, experiments.train\n'
          'print(sorted(m for m in flags.FLAGS.flags_by_module_dict()\n'
          '             if m.startswith(("data", "experiments", "models", "launch"))))\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == '[]', out.stdout
