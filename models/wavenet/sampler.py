"""The cached WaveNet sampler (Fast WaveNet queues), the naive reference, and `sample_codes`.

Layers that share a dilation share one ring buffer, time first: [(k - 1) d, G, B, R] for the G
layers of dilation d. A step reads every past tap before it writes anything, so that XLA can
update the buffers in place (reads interleaved with writes made it copy every buffer, twice, at
every step), and each tap is one contiguous [G, B, R] row.

On the CPU a step runs, by default, as one call of the compiled kernel (kernel.py,
step_kernel.cc): the layers, reading the taps from these buffers and writing the new inputs
into them in place (aliased), the head, and a softmax model's draw. The pure-JAX step below
is the reference, and the path on GPU and TPU and for bfloat16 models.
"""

from collections.abc import Iterator
import functools

import jax
import jax.numpy as jnp
import numpy as np

from models.layers import autoregressive
from models.layers import sampling
from models.wavenet import kernel as step_kernel
from models.wavenet.model import condition
from models.wavenet.model import draws
from models.wavenet.model import gate
from models.wavenet.model import head
from models.wavenet.model import layer_conditioning
from models.wavenet.model import Model
from models.wavenet.model import sample_from_draws
from models.wavenet.model import stacked_layers
from models.wavenet.model import unboxed_params
from models.wavenet.model import value


def _groups(model: Model) -> tuple[tuple[int, tuple[int, ...]], ...]:
  """(dilation, its layers) for each distinct dilation, in order of first use."""
  if model.kernel_size == 1:  # no past taps, nothing to remember
    return ()
  out = {}
  for i, d in enumerate(model.dilations):
    out.setdefault(d, []).append(i)
  return tuple((d, tuple(ix)) for d, ix in out.items())


def init_cache(model: Model, batch: int) -> dict:
  """The sampler's state before the first sample: zero queues (the causal zero padding)."""
  k, r = model.kernel_size, model.residual_channels
  return {
      't': jnp.zeros((), jnp.int32),  # the position of the next input
      'stem': jnp.full((batch, k - 1), -1, jnp.int32),  # past input codes; -1 before the start
      'bufs': [jnp.zeros(((k - 1) * d, len(ix), batch, r), jnp.dtype(model.dtype))
               for d, ix in _groups(model)],  # [(k-1) d, G, B, R] layer inputs, ring by time
  }


def sampler_weights(model: Model, p: dict, kernel: bool = False) -> dict:
  """The parameters rearranged once for `step`: per layer the current tap's kernel [R, 2H], the
  residual and skip kernels side by side [H, R + S] (one matmul), and per dilation group the past
  taps' kernels [k - 1, G, R, 2H]; or, for the CPU kernel, under 'stack' what it takes
  (kernel.step): the layers' convolution and output kernels and biases stacked, and the head,
  kernels packed."""
  k, r, h2 = model.kernel_size, model.residual_channels, model.gate_channels
  dtype = jnp.dtype(model.dtype)
  w = {'stem': p['stem']}
  if kernel:
    conv, bias, out, out_bias = (a.astype(dtype) for a in stacked_layers(model, p))
    w['stack'] = {'conv': step_kernel.pack(conv), 'bias': bias[:, None],  # [L, 1, 2H]
                  'out': step_kernel.pack(out), 'out_bias': out_bias,
                  'head': [step_kernel.pack(p['head_hidden']['kernel']),
                           p['head_hidden']['bias'], step_kernel.pack(p['head_out']['kernel']),
                           p['head_out']['bias']]}
  else:
    conv = [p[f'layer{i}']['conv']['kernel'].reshape(k, r, h2).astype(dtype)
            for i in range(model.num_layers)]  # [k, R, 2H]; tap j sees x[t - (k - 1 - j) d]
    layers = []
    for i in range(model.num_layers):
      lp = p[f'layer{i}']
      names = ('res', 'skip') if 'res' in lp else ('skip',)
      layers.append({
          'cur': conv[i][k - 1], 'bias': lp['conv']['bias'].reshape(h2).astype(dtype),
          'out': jnp.concatenate([lp[n]['kernel'] for n in names], 1).astype(dtype),
          'out_bias': jnp.concatenate([lp[n]['bias'] for n in names]).astype(dtype)})
    w.update(layers=layers, head_hidden=p['head_hidden'], head_out=p['head_out'],
             past=[jnp.stack([conv[i][:k - 1] for i in ix], 1) for _, ix in _groups(model)])
  if model.local_features:
    w['local'] = {n: jnp.stack([p[f'layer{i}']['local'][n].reshape(-1, h2)
                                for i in range(model.num_layers)], -2)
                  for n in ('kernel', 'bias')}  # [C, L, 2H], [L, 2H]
  return w


def _step(model: Model, w: dict, cache: dict, codes: jax.Array, cond: jax.Array | None,
          pre: dict | None = None, kernel: bool = False, draw: tuple | None = None
          ) -> tuple[jax.Array, dict, jax.Array | None]:
  """`step` on the weights of `sampler_weights(..., kernel)`, and the next codes where it drew
  them.

  `pre` maps a dilation group's index to its layers' past taps through their kernels at this
  step, [G, B, 2H], where the caller computed them ahead; the other groups read their buffers.
  `kernel`: run the layers and the head as one call of the CPU kernel (kernel.py) rather than
  as XLA ops; with `draw` = (uniforms [B], temperature) (softmax only), the kernel also draws
  the next codes as `sample_from_draws` does.
  """
  k, t, dtype = model.kernel_size, cache['t'], jnp.dtype(model.dtype)
  r, h, b = model.residual_channels, model.gate_channels // 2, codes.shape[0]
  codes = codes.astype(jnp.int32)
  past = jnp.concatenate([cache['stem'], codes[:, None]], axis=1)  # [B, k]
  ws = w['stem']['kernel']  # [k, D, R]
  if model.output == 'softmax':
    emb = [jnp.where(past[:, j, None] >= 0, ws[j][jnp.maximum(past[:, j], 0)], 0.)
           for j in range(k)]
  else:
    v = jnp.where(past >= 0, value(model, past), 0.)  # [B, k]
    emb = [v[:, j, None] * ws[j, 0] for j in range(k)]
  x = (sum(emb) + w['stem']['bias']).astype(dtype)  # [B, R]
  groups, pre = _groups(model), dict(pre or {})
  if cond is not None:  # in the model's dtype, as the layers' inputs and biases
    cond = cond.reshape(b, model.num_layers, 2 * h).astype(dtype)
  if kernel:  # the layers and the head in one call, which also writes the buffers
    st = w['stack']
    offsets = st['bias'] if cond is None else st['bias'] + jnp.moveaxis(cond, 1, 0)
    where = {i: (g, s, d) for g, (d, ix) in enumerate(groups) for s, i in enumerate(ix)}
    group, slot, dil = zip(*(where.get(i, (-1, 0, 0)) for i in range(model.num_layers)))
    out, drawn, bufs = step_kernel.step(x, offsets, st['conv'], st['out'], st['out_bias'],
                                        *st['head'], t, cache['bufs'], group, slot, dil,
                                        *(draw or ()))
    return out, {'t': t + 1, 'stem': past[:, 1:], 'bufs': bufs}, drawn
  ahead = [0.] * model.num_layers  # each layer's past taps through its kernel, [B, 2H]
  for g, ((d, ix), buf, wp) in enumerate(zip(groups, cache['bufs'], w['past'])):
    if g not in pre:
      taps = jnp.stack([jax.lax.dynamic_index_in_dim(buf, (t - m * d) % buf.shape[0], 0, False)
                        for m in range(k - 1, 0, -1)])  # [k - 1, G, B, R]
      pre[g] = jnp.einsum('jgbr,jgrh->gbh', taps, wp)  # [G, B, 2H]
    for s, i in enumerate(ix):
      ahead[i] = pre[g][s]
  inputs, skips = [], 0.
  for i, lw in enumerate(w['layers']):
    inputs.append(x)
    y = x @ lw['cur'] + ahead[i] + lw['bias']  # [B, 2H]
    if cond is not None:
      y = y + cond[:, i]
    z = gate(y.reshape(b, 2, h))  # [B, H]
    o = z @ lw['out'] + lw['out_bias']  # [B, R + S], or [B, S] for the last layer
    if o.shape[-1] > model.skip_channels:
      x, o = x + o[:, :r], o[:, r:]
    skips = skips + o
  bufs = [jax.lax.dynamic_update_index_in_dim(buf, jnp.stack([inputs[i] for i in ix]),
                                              t % buf.shape[0], 0)
          for (d, ix), buf in zip(groups, cache['bufs'])]
  cache = {'t': t + 1, 'stem': past[:, 1:], 'bufs': bufs}
  return head(w, skips).astype(jnp.float32), cache, None


def step(model: Model, p: dict, cache: dict, codes: jax.Array,
         cond: jax.Array | None = None, kernel: bool | None = None) -> tuple[jax.Array, dict]:
  """One sample: the input codes [B] at position cache['t'] -> (output [B, Q or 3M], cache).

  `p` is the nested parameter dict (`unboxed_params`). `cond` [B, L, 2, H] is the sum of the
  layers' global and local gate offsets at this position (see `layer_conditioning`), or None for
  an unconditional model. `kernel`: run the layers in the CPU kernel (kernel.py); default where
  it is usable (built, float32, on the CPU).
  """
  if kernel is None:
    kernel = step_kernel.usable(model.dtype)
  return _step(model, sampler_weights(model, p, kernel), cache, codes, cond, kernel=kernel)[:2]


# Steps per inner loop of `_run`, by the streams in the loop: one stream runs 15-20% faster in
# blocks of 32 than of 16, several (8 per core) as fast or slightly faster in blocks of 16
# (peer config, 2-core AMD EPYC, alternating runs).
_BLOCK = 16
_BLOCK_ONE_STREAM = 32


def _stream_draws(model: Model, rng: jax.Array, t: jax.Array, streams: jax.Array):
  """`draws` of the samples at positions t [S] of streams [B]: leaves [S, B, ...]."""
  def one(t, i):
    return draws(model, sampling.stream_key(rng, t, i), ())
  return jax.vmap(jax.vmap(one, (None, 0)), (0, None))(t, streams)


@functools.partial(jax.jit, static_argnums=(0, 6), static_argnames=('kernel',),
                   donate_argnums=(2,))
def _run(model: Model, w: dict, cache: dict, x: jax.Array, rng: jax.Array,
         temperature: jax.Array, n: int, forced: jax.Array | None, gproj: jax.Array | None,
         local: jax.Array | None, local_offset: jax.Array, stream0: jax.Array, *,
         kernel: bool):
  """n steps of streams stream0 + [0, B) from their input codes x [B].

  `forced` [B, n] replaces the sampled codes (a prompt); `gproj` [B, L, 2, H] and `local`
  [B, F, C] are the global and local conditioning, or None; local[:, 0] is frame
  `local_offset`. The steps run in blocks (`_BLOCK` steps; `_BLOCK_ONE_STREAM` for one
  stream): a block draws its random numbers at once, and takes the past taps of each dilation
  >= its length, which all precede the block, through their kernels in one matmul, leaving per
  step only the taps of the short dilations. `kernel`: each step in the CPU kernel, which reads
  every past tap itself (and draws a softmax model's codes).
  """
  k, b, groups = model.kernel_size, x.shape[0], _groups(model)
  if gproj is not None and kernel:  # constant in time: joins the biases
    w = dict(w, stack=dict(w['stack'], bias=w['stack']['bias'] +
                           jnp.moveaxis(gproj.reshape(b, model.num_layers, -1), 1, 0)))
  elif gproj is not None:
    w = dict(w, layers=[dict(lw, bias=(lw['bias'] + gproj[:, i].reshape(b, -1)).astype(
        lw['bias'].dtype)) for i, lw in enumerate(w['layers'])])
  if local is not None:  # this chunk's frames, projected once per layer
    hop, last = model.hop_length, local.shape[1] - 1
    nf = n // hop + 2
    f0 = jnp.minimum((cache['t'] + 1) // hop - local_offset, last)
    padded = jnp.concatenate([local, jnp.repeat(local[:, -1:], nf, axis=1)], axis=1)
    frames = jax.lax.dynamic_slice_in_dim(padded, f0, nf, axis=1)  # [B, nf, C]
    lproj = jnp.einsum('bfc,clh->bflh', frames, w['local']['kernel']) + w['local']['bias']
  streams = stream0 + jnp.arange(b)

  def body(carry, xs):
    cache, x = carry
    cond = None
    if local is not None:
      f = jnp.minimum((cache['t'] + 1) // hop - local_offset, last)
      cond = jax.lax.dynamic_index_in_dim(lproj, f - f0, axis=1, keepdims=False)  # [B, L, 2H]
    in_kernel = kernel and forced is None and model.output == 'softmax'  # draws there too
    out, cache, drawn = _step(model, w, cache, x, cond, xs['pre'], kernel,
                              (xs['draws'], temperature) if in_kernel else None)
    if forced is not None:
      x = xs['forced']
    else:
      x = drawn if in_kernel else sample_from_draws(model, xs['draws'], out, temperature)
    return (cache, x), x

  def block(carry, forced_block, length):
    t, s = carry[0]['t'], jnp.arange(length)
    pre = {}
    past = () if kernel else w['past']  # the kernel reads every tap itself
    for g, ((d, _), buf, wp) in enumerate(zip(groups, carry[0]['bufs'], past)):
      if d >= length:
        taps = jnp.stack([buf[(t + s - m * d) % buf.shape[0]]
                          for m in range(k - 1, 0, -1)])  # [k - 1, S, G, B, R]
        pre[g] = jnp.einsum('jsgbr,jgrh->sgbh', taps, wp)  # [S, G, B, 2H]
    xs = {'pre': pre}
    if forced_block is None:  # the sample drawn after input t is the code at t + 1
      xs['draws'] = _stream_draws(model, rng, t + 1 + s, streams)
    else:
      xs['forced'] = forced_block
    return jax.lax.scan(body, carry, xs)

  size = _BLOCK_ONE_STREAM if b == 1 else _BLOCK
  nb, rem = divmod(n, size)
  forced = None if forced is None else forced.T  # [n, B]
  carry, codes = (cache, x), []
  if nb:
    xs = None if forced is None else forced[:nb * size].reshape(nb, size, b)
    carry, c = jax.lax.scan(lambda c, f: block(c, f, size), carry, xs, length=nb)
    codes.append(c.reshape(nb * size, b))
  if rem:
    carry, c = block(carry, None if forced is None else forced[nb * size:], rem)
    codes.append(c)
  cache, x = carry
  return cache, x, jnp.concatenate(codes).T  # [B, n]


@functools.partial(jax.jit, static_argnums=(0, 4))
def _prepare(model: Model, variables: dict, global_ids: jax.Array | None,
             local: jax.Array | None, kernel: bool):
  """(sampler weights for the kernel or not, global gate offsets [B, L, 2, H], local
  conditioning [B, F, C]); jitted, because fetching the parameters through flax checks every
  shape (~0.2 s a call)."""
  p = unboxed_params(model, variables)
  gproj = None if global_ids is None else layer_conditioning(
      model, p, p['global_embed'][global_ids], 'global')
  lc = None if local is None else condition(model, p, local)
  return sampler_weights(model, p, kernel), gproj, lc


def sample_codes(model: Model, variables: dict, rng: jax.Array, num_samples: int,
                 batch: int = 1, prompt: np.ndarray | None = None,
                 local: np.ndarray | None = None, local_offset: int = 0,
                 global_ids: np.ndarray | None = None, temperature: float = 1.0,
                 chunk_samples: int = 16000, first_stream: int = 0, resume: dict | None = None,
                 keep: dict | None = None, kernel: bool | None = None) -> Iterator[np.ndarray]:
  """Yields `num_samples` new codes per stream as host chunks [B, <= chunk_samples]; the
  family's `generate` decodes them to audio.

  Args:
    model, variables: the model and its {'params': ...}.
    rng: a PRNG key; the code at position t of stream i draws with
      fold_in(fold_in(rng, t), i), whatever the chunking and the other streams.
    num_samples: codes to generate after the prompt.
    batch: streams, when there is no prompt.
    prompt: codes [B, P] to continue; default one silent code per stream (not yielded).
    local: frame features [B, F, D] covering prompt and continuation, frame f holding samples
      [f hop, (f + 1) hop).
    local_offset: the frame number of local[:, 0]: a window of the frames, which must hold
      every frame the steps read (with its neighbours, for the width-3 frame convolution),
      so that a long stream's conditioning can arrive in pieces (models/vqvae/hierarchy.py).
    global_ids: [B] int32.
    temperature: scales the logits (softmax) or the logistic scales (mixture).
    chunk_samples: steps per compiled scan; memory does not grow with num_samples.
    first_stream: the number of stream 0 in the draws above: processes that each sample a
      slice [k, k + B) of a set of streams pass k, and together draw what one process would.
    resume, keep: a saved state {'cache', 'x'} to continue from (instead of a prompt), and a
      dict that receives the state before the first chunk and after each
      (layers/autoregressive.keep_state); either runs the streams in one host thread.
    kernel: step the layers in the CPU kernel (kernel.py) or in XLA ops; by default the
      kernel wherever it is usable (built, float32, on the CPU).
  """
  if prompt is None:
    prompt = np.full((batch if resume is None else resume['x'].shape[0], 1),
                     model.num_classes // 2, np.int32)
  prompt = np.asarray(prompt, np.int32)
  if model.num_global and global_ids is None:
    raise ValueError('this model is globally conditioned: pass global_ids [B]')
  if model.num_global and not np.all((0 <= np.asarray(global_ids)) &
                                     (np.asarray(global_ids) < model.num_global)):
    raise ValueError(f'global ids {np.asarray(global_ids).tolist()}: expected 0..'
                     f'{model.num_global - 1}')
  if model.local_features and local is None:
    raise ValueError('this model is locally conditioned: pass frame features [B, F, D]')
  kernel = step_kernel.usable(model.dtype) if kernel is None else kernel
  w, gproj, lc = _prepare(
      model, variables,
      jnp.asarray(global_ids, jnp.int32) if model.num_global else None,
      jnp.asarray(local, jnp.float32) if model.local_features else None, kernel)
  temperature = jnp.float32(temperature)

  def part(lo, hi):  # the chunks of streams [lo, hi)
    cond = [None if a is None else a[lo:hi] for a in (gproj, lc)] + [
        jnp.int32(local_offset), jnp.int32(first_stream + lo)]
    if resume is None:
      cache, x = init_cache(model, hi - lo), jnp.asarray(prompt[lo:hi, 0])
      for s in range(1, prompt.shape[1], chunk_samples):  # teacher-force the prompt
        forced = jnp.asarray(prompt[lo:hi, s:s + chunk_samples])
        cache, x, _ = _run(model, w, cache, x, rng, temperature, forced.shape[1], forced, *cond,
                           kernel=kernel)
    else:
      cache, x = resume['cache'], resume['x']
    autoregressive.keep_state(keep, cache, x)
    for s in range(0, num_samples, chunk_samples):
      n = min(chunk_samples, num_samples - s)
      cache, x, codes = _run(model, w, cache, x, rng, temperature, n, None, *cond, kernel=kernel)
      autoregressive.keep_state(keep, cache, x)
      yield np.asarray(codes)

  if resume is not None or keep is not None:
    yield from part(0, prompt.shape[0])
  else:
    yield from sampling.over_threads(prompt.shape[0], part)


@functools.partial(jax.jit, static_argnums=(0, 3))
def naive_generate(model: Model, variables: dict, rng: jax.Array, n: int,
                   window: jax.Array) -> jax.Array:
  """The reference sampler: n steps, each a full forward pass over the last W codes.

  `window` [B, W] holds each stream's codes at positions 0 .. W - 1; returns the codes at
  W .. W + n - 1 [B, n], drawn as `sample_codes` draws them: for W >= the receptive field, both
  give the same codes for prompt=window. Unconditional models only.
  """
  b, wl = window.shape

  def body(win, t):
    out = model.apply(variables, win)[:, -1]
    noise = jax.tree.map(lambda a: a[0], _stream_draws(model, rng, t[None], jnp.arange(b)))
    x = sample_from_draws(model, noise, out, 1.)
    return jnp.concatenate([win[:, 1:], x[:, None]], axis=1), x

  _, codes = jax.lax.scan(body, window, wl + jnp.arange(n))
  return codes.T
