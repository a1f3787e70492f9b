"""The WaveNet CPU kernels, through `jax.ffi`: the sampler's step (step_kernel.cc) and the
layer stack's training forward and backward (stack_kernel.cc).

setup.py compiles them against the XLA FFI headers that jaxlib ships when the package
is installed (`pip install -e .`, see kernel_build.py); `python -m models.wavenet.kernel_build`
compiles them again in place, after an edit. Where they are not built (no C++ compiler at
install time) the sampler runs its pure-JAX step and the model its pure-JAX layers, which stay
the reference and the path on GPU and TPU, and a notice says so once.

`step(...)`: one sampler step from the stem's output to the head's; see step_kernel.cc.
`stack(...)`: the residual layers' skip sum, differentiable (a custom_vjp over the forward and
backward calls); see stack_kernel.cc.
"""

import ctypes
import functools
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

TARGET = 'wavegen_wavenet_step'
STACK_FORWARD, STACK_BACKWARD = 'wavegen_wavenet_stack_forward', 'wavegen_wavenet_stack_backward'


# step_kernel.cc's WavegenWavenetStepAbi(): the operands' layout of both kernels; a mismatch is
# a stale library.
ABI = 5


@functools.cache
def available() -> bool:
  """Whether the kernel is built, current, and registered with XLA for the CPU (once per
  process); a miss logs a one-line notice."""
  from models.wavenet import kernel_build  # here: `python -m` runs it as a script
  library = kernel_build.LIBRARY
  fallback = 'sampling and training on the CPU use the pure-JAX layers'
  rebuild = '`python -m models.wavenet.kernel_build` builds them'
  if not os.path.exists(library):
    logging.warning('WaveNet CPU kernels not built (no %s; %s): %s', library, rebuild, fallback)
    return False
  try:
    lib = ctypes.cdll.LoadLibrary(library)
    abi = lib.WavegenWavenetStepAbi()
    if abi != ABI:
      logging.warning('WaveNet CPU kernels %s are stale (interface %d, expected %d; %s): %s',
                      library, abi, ABI, rebuild, fallback)
      return False
    for target, symbol in ((TARGET, lib.WavegenWavenetStep),
                           (STACK_FORWARD, lib.WavegenWavenetStackForward),
                           (STACK_BACKWARD, lib.WavegenWavenetStackBackward)):
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(symbol), platform='cpu')
  except (OSError, AttributeError) as e:
    logging.warning('WaveNet CPU kernels %s do not load (%s): %s', library, e, fallback)
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


def unsharded() -> bool:
  """Whether no mesh of several devices is in effect (`jax.set_mesh`): the stack kernel runs
  unpartitioned, so a sharded model keeps its pure-JAX layers."""
  mesh = jax.sharding.get_abstract_mesh()
  return mesh.empty or mesh.size == 1


def step(x: jax.Array, offsets: jax.Array, conv: jax.Array, out: jax.Array, out_b: jax.Array,
         head_w1: jax.Array, head_b1: jax.Array, head_w2: jax.Array, head_b2: jax.Array,
         t: jax.Array, bufs: list[jax.Array], group: list[int], slot: list[int],
         dilation: list[int], u: jax.Array | None = None, temperature: jax.Array | None = None
         ) -> tuple[jax.Array, jax.Array | None, list[jax.Array]]:
  """One sampler step from the stem's output: (output [B, Q], codes [B] drawn from
  softmax(output / temperature) by the uniforms u [B] or None without u, the buffers with this
  step's layer inputs written in place); see step_kernel.cc for the operands (`pack` packs
  conv, out and the head's kernels)."""
  _require()
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
                              draw=np.int64(draw), threads=np.int64(threads()))
  return output, codes if draw else None, bufs


def threads() -> int:
  """The cores this process may run on: the stack kernel splits its rows over as many, and the
  sampler's step takes its helper thread with 2 or more (step_kernel.cc)."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def _require() -> None:
  if not available():
    raise RuntimeError('the WaveNet CPU kernels are not built or do not load: '
                       '`python -m models.wavenet.kernel_build` builds them')


def _stack_call(x0, conv, offsets, out, out_b, dilations, hop):
  _require()
  (b, t, r), (l, kr, h2) = x0.shape, conv.shape
  pad = (kr // r - 1) * max(dilations)
  results = [jax.ShapeDtypeStruct((b, t, out.shape[-1] - r), jnp.float32),
             jax.ShapeDtypeStruct((l, b, pad + t, r), jnp.float32),
             jax.ShapeDtypeStruct((l, b, t, h2), jnp.float32)]
  return jax.ffi.ffi_call(STACK_FORWARD, results, vmap_method='sequential')(
      x0, pack(conv), offsets, pack(out), out_b, dilation=np.asarray(dilations, np.int64),
      hop=np.int64(hop), threads=np.int64(threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def stack(x0: jax.Array, conv: jax.Array, offsets: jax.Array, out: jax.Array,
          out_b: jax.Array, dilations: tuple[int, ...], hop: int) -> jax.Array:
  """The residual layers of a float32 WaveNet: their skip outputs summed, [B, T, S].

  x0 [B, T, R]: the stem's output; conv [L, kR, 2H]: each layer's dilated convolution, tap by
  tap; offsets [L, 1 or B, F, 2H]: its bias plus conditioning, frame f(t) = min((t + 1) // hop,
  F - 1) at position t (F = 1 and hop = 0 without local conditioning); out [L, H, R + S]: the
  residual and skip kernels side by side, out_b [L, R + S] their biases (the last layer's
  residual part zero); dilations: each layer's. Differentiable in every array argument.
  """
  return _stack_call(x0, conv, offsets, out, out_b, dilations, hop)[0]


def _stack_forward(x0, conv, offsets, out, out_b, dilations, hop):
  skips, xs, ts = _stack_call(x0, conv, offsets, out, out_b, dilations, hop)
  return skips, (xs, ts, conv, offsets, out)


def _stack_backward(dilations, hop, residuals, dskips):
  xs, ts, conv, offsets, out = residuals
  (l, kr, h2), r = conv.shape, xs.shape[-1]
  conv_t = pack(jnp.swapaxes(conv.reshape(l, kr // r, r, h2), -1, -2))  # [L, k, 2H, R]
  out_t = pack(jnp.swapaxes(out, -1, -2))  # [L, R + S, H]
  shapes = [(*dskips.shape[:2], r), conv.shape, offsets.shape, out.shape, (l, out.shape[-1])]
  results = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
  return tuple(jax.ffi.ffi_call(STACK_BACKWARD, results, vmap_method='sequential')(
      dskips, xs, ts, offsets, conv_t, out_t, dilation=np.asarray(dilations, np.int64),
      hop=np.int64(hop), threads=np.int64(threads())))


stack.defvjp(_stack_forward, _stack_backward)
