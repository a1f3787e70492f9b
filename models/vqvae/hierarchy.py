"""Hierarchical sampling: code streams rendered level by level down to audio, in bounded memory.

Every sequence of the hierarchy (a level's codes, the audio codes) starts at position 0 with a
start code, the middle of its vocabulary (silence, for mu-law audio), unless a prompt gives its
first positions: that is the cached WaveNet sampler's convention (models/wavenet/sampler.py),
which each level's decoder uses to draw the sequence below it.

`LevelDecoder` turns level n's codes, as they arrive, into the codes of the level below: it
draws positions [a hop, b hop) once level-n frames up to b exist, b one short of the frames
received (frame b - 1's conditioning reads frame b through the decoder's width-3 frame
convolution) until the stream ends. It keeps its sampler's state between pieces (`resume` /
`keep`) and only the frames it still needs, and passes the WaveNet sampler a window of frame
vectors with its offset (`local_offset`), so that the codes drawn do not depend on how the
stream was cut: stream i draws position t of level n with fold_in(fold_in(key_n, t), i), as
one `sample_codes` call over the whole sequence would.

`render` chains the decoders from the top level down; a prior's `generate`
(models/vqvae_prior.py) feeds it the top prior's chunks, and a level's `generate` the codes
of an encoded prompt (a reconstruction).
"""

from collections.abc import Iterator, Sequence

import jax
import numpy as np

from models import wavenet
from models.layers import autoregressive
from models.vqvae import model as model_lib


class LevelDecoder:
  """Level n's decoder over a growing stream of level-n codes (module docstring)."""

  def __init__(self, level: model_lib.Model, variables: dict, rng: jax.Array,
               temperature: float, batch: int, frames: np.ndarray | None = None,
               prompt: np.ndarray | None = None, chunk_samples: int = 16000,
               first_stream: int = 0):
    """`variables` the level's {'params', 'vq'}; `frames` [B, F] the level's codes known at the
    start (a prompt's, or a start code); `prompt` [B, P] the codes of the level below that the
    known frames cover (P = F hop), or None: the level below starts from its start code."""
    self.decoder = model_lib.decoder_of(level)
    self.variables = {'params': variables['params']['wavenet']}
    self.embedding = np.asarray(variables['vq']['codebook']['embedding'])
    self.hop, self.batch = level.hop, batch
    self.rng, self.temperature = rng, temperature
    self.chunk_samples, self.first_stream = chunk_samples, first_stream
    self.frames = (np.zeros((batch, 0), np.int32) if frames is None
                   else np.asarray(frames, np.int32))
    self.first = 0  # the frame number of self.frames[:, 0]
    self.done = 0  # frames whose positions below have been drawn
    self.prompt = None if prompt is None else np.asarray(prompt, np.int32)
    if self.prompt is not None and self.prompt.shape[1] != self.frames.shape[1] * self.hop:
      raise ValueError(f'a prompt of {self.prompt.shape[1]} codes below {self.frames.shape[1]} '
                       f'frames of hop {self.hop}')
    self.known = 1 if self.prompt is None else self.prompt.shape[1]  # positions given below
    self.state = None

  def push(self, codes: np.ndarray, final: bool = False) -> np.ndarray:
    """Level-n codes [B, k] that follow those received -> the new codes of the level below
    [B, m] (m may be 0), from position 0 (its start code) on the first draw without a
    prompt, else from the first position not yet given; `final`: the stream ends here."""
    if codes.shape[1]:
      self.frames = np.concatenate([self.frames, np.asarray(codes, np.int32)], axis=1)
    avail = self.first + self.frames.shape[1]
    end = avail if final else avail - 1
    if end <= self.done or (self.state is None and end * self.hop <= self.known):
      return np.zeros((self.batch, 0), np.int32)
    lo, hi = max(self.done - 1, 0), min(end + 1, avail)
    local = self.embedding[self.frames[:, lo - self.first:hi - self.first]]  # [B, F, D]
    keep = {}
    options = dict(local=local, local_offset=lo, temperature=self.temperature,
                   chunk_samples=self.chunk_samples, first_stream=self.first_stream, keep=keep)
    if self.state is None:
      n = end * self.hop - self.known
      chunks = wavenet.sample_codes(self.decoder, self.variables, self.rng, n, batch=self.batch,
                                    prompt=self.prompt, **options)
    else:
      n = (end - self.done) * self.hop
      chunks = wavenet.sample_codes(self.decoder, self.variables, self.rng, n,
                                    resume=self.state, **options)
    out = np.concatenate(list(chunks), axis=1)
    if self.state is None and self.prompt is None:  # the level below starts with its start code
      out = np.concatenate([np.full((self.batch, 1), self.decoder.num_classes // 2, np.int32),
                            out], axis=1)
    self.state, self.done = keep['state'], end
    drop = max(end - 1, 0) - self.first  # keep frame end - 1: the next window's left neighbour
    self.frames, self.first = self.frames[:, drop:], self.first + drop
    return out


def temperatures(temperature, n: int) -> tuple[float, ...]:
  """A temperature per stage (a float for all, or a sequence of n), as floats."""
  if isinstance(temperature, (int, float, np.floating)):
    return (float(temperature),) * n
  out = tuple(float(t) for t in temperature)
  if len(out) != n:
    raise ValueError(f'temperatures {out}: expected {n}, one per stage, the top first')
  return out


def prompt_codes(levels: Sequence[model_lib.Model], variables: dict,
                 prompt: np.ndarray) -> list[np.ndarray]:
  """Float audio [B, P] -> [audio codes, level-1 codes, ...] of its last P' samples, P' the
  largest multiple of the top level's audio hop, so that every level's codes align."""
  prompt = np.asarray(prompt, np.float32)
  hop = levels[-1].audio_hop
  if prompt.ndim != 2 or prompt.shape[1] < hop:
    raise ValueError(f'prompt of shape {prompt.shape}: expected float audio [B, P] of at least '
                     f'{hop} samples (one code of the top level)')
  codes = [autoregressive.encode(levels[0], prompt[:, prompt.shape[1] % hop:])]
  for i, level in enumerate(levels):
    codes.append(np.asarray(model_lib.encode_codes(
        level, model_lib.level_variables(variables, i + 1), codes[-1])))
  return codes


def render(levels: Sequence[model_lib.Model], variables: dict, top: Iterator[np.ndarray],
           rng: jax.Array, temps: Sequence[float], *, batch: int,
           known: Sequence[np.ndarray] | None = None, top_start: bool = True,
           chunk_samples: int = 16000, first_stream: int = 0) -> Iterator[np.ndarray]:
  """Chunks of the top level's new codes -> chunks of new audio codes [B, m], through every
  level's decoder from the top down. `known` [audio codes, level-1 codes, ..., top codes] of a
  prompt (`prompt_codes`), or None: every sequence below the top starts from its start code.
  Where `top_start`, the top's does too (a prior's draws follow it) and the audio's start code
  (position 0) is not yielded; else `top` holds the top codes from position 0 (an encoding),
  and the audio from position 0 is yielded, its start code standing for the first sample. `temps`
  the decoders' temperatures, the top level's first; level n draws with fold_in(rng, n)."""
  n = len(levels)
  decoders = []
  for i in reversed(range(n)):
    frames = (known[i + 1] if known is not None else
              np.full((batch, 1), levels[i].codebook_size // 2, np.int32)
              if i == n - 1 and top_start else None)
    decoders.append(LevelDecoder(
        levels[i], model_lib.level_variables(variables, i + 1), jax.random.fold_in(rng, i + 1),
        temps[n - 1 - i], batch, frames=frames, prompt=None if known is None else known[i],
        chunk_samples=chunk_samples, first_stream=first_stream))
  skip = 1 if known is None and top_start else 0  # the audio's start code, before a prior's
  chunk = next(top, None)
  while chunk is not None:
    following = next(top, None)
    codes = chunk
    for decoder in decoders:
      codes = decoder.push(codes, final=following is None)
    if skip and codes.shape[1]:
      codes, skip = codes[:, skip:], 0
    if codes.shape[1]:
      yield codes
    chunk = following


def audio_chunks(level1: model_lib.Model, codes: Iterator[np.ndarray], num_samples: int,
                 chunk_samples: int) -> Iterator[np.ndarray]:
  """Audio code chunks of any size -> float audio chunks [B, <= chunk_samples], `num_samples`
  per stream in all."""
  pending, left = [], num_samples
  for c in codes:
    pending.append(c)
    have = sum(p.shape[1] for p in pending)
    while left and have >= min(chunk_samples, left):
      cat = np.concatenate(pending, axis=1)
      take = min(chunk_samples, left)
      yield autoregressive.decode(level1, cat[:, :take])
      pending, left, have = [cat[:, take:]], left - take, have - take
    if not left:
      return
  if left:
    raise RuntimeError(f'the hierarchy rendered {num_samples - left} of {num_samples} samples')
