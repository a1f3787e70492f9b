"""README.md's Quickstart is what CI runs."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart_commands():
  text = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
  section = text.split('## Quickstart', 1)[1].split('\n## ', 1)[0]
  return re.findall(r'```\n(.*?)\n```', section, re.S)


def test_quickstart_has_two_commands_and_ci_runs_the_second():
  commands = _quickstart_commands()
  assert len(commands) == 2 and all('\n' not in c for c in commands)
  ci = open(os.path.join(ROOT, '.ci', 'run'), encoding='utf-8').read().splitlines()
  assert commands[1] in ci
