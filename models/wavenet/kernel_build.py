"""Compiles the WaveNet CPU kernels (step_kernel.cc, the sampler's step; stack_kernel.cc, the
layer stack's training forward and backward) into one shared library beside them.

setup.py runs this when the package is installed; `python -m models.wavenet.kernel_build`
runs it again after an edit. It needs a C++17 compiler and the XLA FFI headers that jaxlib
ships (jaxlib/include), and imports neither jax nor anything outside the standard library, so
that setup.py can load it in a build environment that holds only jaxlib.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = tuple(os.path.join(_HERE, f) for f in ('step_kernel.cc', 'stack_kernel.cc'))
HEADERS = (os.path.join(_HERE, 'kernel_util.h'),)
# The extension suffix makes the file setuptools' build_ext writes and the one kernel.py loads
# the same.
NAME = '_step_kernel'
LIBRARY = os.path.join(_HERE, NAME + sysconfig.get_config_var('EXT_SUFFIX'))
FLAGS = ('-O3', '-std=c++17', '-fPIC', '-fno-math-errno')


def include_dir() -> str:
  """jaxlib's include directory (the XLA FFI headers); RuntimeError when jaxlib is absent."""
  spec = importlib.util.find_spec('jaxlib')
  if spec is None or not spec.submodule_search_locations:
    raise RuntimeError('jaxlib is not installed: its XLA FFI headers build the kernel')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'include')
  if not os.path.exists(os.path.join(path, 'xla', 'ffi', 'api', 'ffi.h')):
    raise RuntimeError(f'{path} holds no xla/ffi/api/ffi.h')
  return path


def compiler() -> str:
  """$CXX, else c++ or g++ on the PATH; RuntimeError when there is none."""
  found = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')
  if not found:
    raise RuntimeError('no C++ compiler (c++ or g++ on the PATH, or $CXX)')
  return found


def flags(cxx: str) -> list[str]:
  """FLAGS, with -march=native where the compiler takes it: an install compiles the kernel on
  the machine that samples with it."""
  with tempfile.TemporaryDirectory() as d:
    probe = os.path.join(d, 'probe.cc')
    with open(probe, 'w') as f:
      f.write('int main() { return 0; }\n')
    native = subprocess.run([cxx, '-march=native', probe, '-o', os.path.join(d, 'a.out')],
                            capture_output=True).returncode == 0
  return list(FLAGS) + (['-march=native'] if native else [])


def build(out: str = LIBRARY, cxx: str | None = None) -> str:
  """Compiles SOURCES into `out` (written whole, then renamed); RuntimeError in one line when
  there is no compiler, no headers, or the compile fails."""
  cxx = cxx or compiler()
  if not shutil.which(cxx):
    raise RuntimeError(f'{cxx}: no such compiler')
  tmp = out + '.partial'
  cmd = [cxx, *flags(cxx), '-shared', '-I', include_dir(), *SOURCES, '-o', tmp]
  res = subprocess.run(cmd, capture_output=True, text=True)
  if res.returncode:
    errors = [l for l in res.stderr.splitlines() if 'error' in l] or res.stderr.splitlines()
    raise RuntimeError(f'{cxx} failed on {" ".join(SOURCES)}: {(errors or ["no output"])[0]}')
  os.replace(tmp, out)
  return out


if __name__ == '__main__':
  try:
    print(build())
  except RuntimeError as e:
    sys.exit(str(e))
