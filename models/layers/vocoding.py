"""What every mel vocoder's `generate` shares (the flows', models/layers/flow_vocoder.py, and the
GANs', models/layers/gan_vocoder.py): the checks of its arguments and the loop that renders a
long mel in windows with context on either side, so that there are no seams."""

from collections.abc import Callable, Iterator
import math

import numpy as np


def check_fields(model, what: str, strides: tuple[int, ...] | None = None) -> None:
  """The one-line errors of a mel vocoder's data fields: float audio (`what` the model does
  with it, e.g. 'is a density on float audio'), ('mel',) conditioning, a positive hop and mel
  width, and upsampling `strides` (where given) whose product is the hop."""
  name = type(model).__module__.split('.')[-1]
  if model.encoding != 'float':
    raise ValueError(f"model.encoding={model.encoding!r} (from config.input.encoding): {name} "
                     f"{what}; expected 'float'")
  if tuple(model.local_keys) != ('mel',):
    raise ValueError(f"model.local_keys={tuple(model.local_keys)}: {name} is conditioned on "
                     "('mel',)")
  if model.hop_length <= 0 or model.local_features <= 0:
    raise ValueError(f'{name} needs the mel hop and width (model.hop_length='
                     f'{model.hop_length}, local_features={model.local_features})')
  if strides is not None and math.prod(strides) != model.hop_length:
    raise ValueError(f'model.upsample_strides={model.upsample_strides}: their product must be '
                     f'the hop, {model.hop_length}')


def checked_mel(model, num_samples: int, batch: int, prompt, cond: dict | None) -> np.ndarray:
  """cond['mel'] [B, F, n_mels] as float32, after the contract's checks: no prompt, B rows, and
  a mel long enough for `num_samples`."""
  name = type(model).__module__.split('.')[-1]
  if prompt is not None:
    raise ValueError(f'{name} is a mel vocoder: it does not continue a prompt')
  if num_samples < 0:
    raise ValueError(f'num_samples={num_samples}: expected >= 0')
  cond = cond or {}
  missing = [k for k in model.local_keys if k not in cond]
  if missing:
    raise ValueError(f'the model is conditioned on {tuple(model.local_keys)}; the batch has no '
                     f'{missing} (add them to config.input.frame_features)')
  mel = np.asarray(cond['mel'], np.float32)
  if mel.shape[0] != batch:
    raise ValueError(f"cond['mel'] has {mel.shape[0]} rows for batch={batch}")
  if num_samples > mel.shape[1] * model.hop_length:
    raise ValueError(f'num_samples={num_samples}: the mel of {mel.shape[1]} frames covers '
                     f'{mel.shape[1] * model.hop_length} samples')
  return mel


def in_windows(render: Callable[[int, int], np.ndarray], frames: int, hop: int, batch: int,
               num_samples: int, chunk_samples: int, context: int) -> Iterator[np.ndarray]:
  """Chunks [B, <= chunk_samples] of `num_samples` samples per stream, rendered window by
  window: `render(lo, hi)` gives the audio [B, (hi - lo) hop] of frames [lo, hi) of a mel of
  `frames` frames; each window of frames [a, b) is rendered with `context` frames on either
  side (clipped at the ends) and the context's audio dropped."""
  needed = -(-num_samples // hop)
  window = max(-(-chunk_samples // hop), 4 * context, 1)
  pending, left = np.zeros((batch, 0), np.float32), num_samples
  for a in range(0, needed, window):
    b = min(a + window, needed)
    lo, hi = max(0, a - context), min(frames, b + context)
    x = render(lo, hi)
    pending = np.concatenate([pending, x[:, (a - lo) * hop:(b - lo) * hop]], axis=1)
    pending = pending[:, :left]
    while pending.shape[1] >= min(chunk_samples, left) > 0:
      n = min(chunk_samples, left)
      yield pending[:, :n]
      pending, left = pending[:, n:], left - n
