"""The CPU kernel of the WaveNet sampler's step (step_kernel.cc), through `jax.ffi`.

setup.py compiles step_kernel.cc against the XLA FFI headers that jaxlib ships when the package
is installed (`pip install -e .`, see kernel_build.py); `python -m models.wavenet.kernel_build`
compiles it again in place, after an edit. Where it is not built (no C++ compiler at install
time) the sampler runs its pure-JAX step, which stays the reference and the path on GPU and
TPU, and says so once.

`step(...)`: one sampler step from the stem's output to the head's; see step_kernel.cc.
"""

import ctypes
import functools
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

TARGET = 'wavegen_wavenet_step'


ABI = 3  # step_kernel.cc's WavegenWavenetStepAbi(): the operands' layout; a mismatch is stale


@functools.cache
def available() -> bool:
  """Whether the kernel is built, current, and registered with XLA for the CPU (once per
  process); a miss logs a one-line notice."""
  from models.wavenet import kernel_build  # here: `python -m` runs it as a script
  library = kernel_build.LIBRARY
  fallback = 'sampling on the CPU uses the pure-JAX step'
  rebuild = '`python -m models.wavenet.kernel_build` builds it'
  if not os.path.exists(library):
    logging.warning('WaveNet step kernel not built (no %s; %s): %s', library, rebuild, fallback)
    return False
  try:
    lib = ctypes.cdll.LoadLibrary(library)
    abi = lib.WavegenWavenetStepAbi()
    if abi != ABI:
      logging.warning('WaveNet step kernel %s is stale (interface %d, expected %d; %s): %s',
                      library, abi, ABI, rebuild, fallback)
      return False
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.WavegenWavenetStep),
                                platform='cpu')
  except (OSError, AttributeError) as e:
    logging.warning('WaveNet step kernel %s does not load (%s): %s', library, e, fallback)
    return False
  return True


PANEL = 32  # step_kernel.cc's kPanel


def pack(w: jax.Array) -> jax.Array:
  """A kernel [..., K, N] as the step takes it: panels of PANEL columns, [..., ceil(N / PANEL),
  K, PANEL], zero-padded, so that the kernel reads each panel in order."""
  n = w.shape[-1]
  w = jnp.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, -n % PANEL)])
  return jnp.moveaxis(w.reshape(*w.shape[:-1], -1, PANEL), -2, -3)


def usable(dtype) -> bool:
  """Whether a sampler should take the kernel: built, float32, and the default backend the
  CPU (the kernel has no GPU or TPU version)."""
  return jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == 'cpu' and available()


def step(x: jax.Array, offsets: jax.Array, conv: jax.Array, out: jax.Array, out_b: jax.Array,
         head_w1: jax.Array, head_b1: jax.Array, head_w2: jax.Array, head_b2: jax.Array,
         t: jax.Array, bufs: list[jax.Array], group: list[int], slot: list[int],
         dilation: list[int], u: jax.Array | None = None, temperature: jax.Array | None = None
         ) -> tuple[jax.Array, jax.Array | None, list[jax.Array]]:
  """One sampler step from the stem's output: (output [B, Q], codes [B] drawn from
  softmax(output / temperature) by the uniforms u [B] or None without u, the buffers with this
  step's layer inputs written in place); see step_kernel.cc for the operands (`pack` packs
  conv, out and the head's kernels)."""
  if not available():
    raise RuntimeError('the WaveNet step kernel is not built or does not load: '
                       '`python -m models.wavenet.kernel_build` builds it')
  if any(buf.dtype != jnp.float32 for buf in bufs):
    raise ValueError(f'the WaveNet step kernel runs float32 models, not {bufs[0].dtype}: '
                     'sample with kernel=False')
  (b, _), q = x.shape, head_b2.shape[-1]
  results = [jax.ShapeDtypeStruct((b, q), jnp.float32), jax.ShapeDtypeStruct((b,), jnp.int32)]
  results += [jax.ShapeDtypeStruct(buf.shape, jnp.float32) for buf in bufs]
  n = 12  # arguments before the buffers
  call = jax.ffi.ffi_call(TARGET, results,
                          input_output_aliases={n + g: 2 + g for g in range(len(bufs))})
  floats = [a.astype(jnp.float32) for a in (
      x, offsets, conv, out, out_b, head_w1, head_b1, head_w2, head_b2)]
  ints = {name: np.asarray(v, np.int64) for name, v in
          (('group', group), ('slot', slot), ('dilation', dilation))}
  draw = u is not None
  u = jnp.zeros((b,), jnp.float32) if u is None else u.astype(jnp.float32)
  temperature = jnp.asarray(1. if temperature is None else temperature, jnp.float32)
  output, codes, *bufs = call(*floats, jnp.asarray(t, jnp.int32), u, temperature,
                              *(buf.astype(jnp.float32) for buf in bufs), **ints,
                              draw=np.int64(draw))
  return output, codes if draw else None, bufs
