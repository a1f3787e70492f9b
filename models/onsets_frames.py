"""Onsets and Frames (Hawthorne et al. 2018), in the version of the MAESTRO paper (Hawthorne et
al. 2019, "Enabling factorized piano music modeling and generation with the MAESTRO dataset"):
piano transcription from log-mel frames, with onset, offset, frame and velocity heads.

    mel [B, F, M] --4 acoustic stacks (one per head, no shared weights)--> [B, F, fc] each
    acoustic stack: 3 x (conv 3x3 -> LayerNorm -> ReLU -> max-pool over frequency by
      `pools`) -> flatten frequency x channels -> dense `fc_size` -> ReLU
    onset, offset:  stack -> BiLSTM -> dense 88                       -> logits
    velocity:       stack -> dense 88                                 -> velocity in ~[0, 1]
    frame:          stack -> dense 88 -> sigmoid, concatenated with stop_gradient(sigmoid) of
                    the onset and offset logits -> BiLSTM -> dense 88  -> logits

The paper's sizes are the defaults: conv filters 48/48/96 (3x3, frequency pools 1/2/2), fc 768,
256 LSTM units per direction in the onset, offset and frame (combined) LSTMs, no LSTM in the
velocity head, and gradients stopped from the frame head into the onset and offset heads. The
MAESTRO paper lists the changes from the 2018 model (LSTMs 128 -> 256, filters 32/32/64 ->
48/48/96, fc 512 -> 768, the offset head, the stopped onset gradient); the numbers are those of
magenta's onsets_frames_transcription `model.get_default_hparams()` (num_filters, pool_sizes,
fc_size, onset/offset/combined_lstm_units, stop_onset_gradient, stop_offset_gradient). Its input
is 229 log-mel bins (HTK, from 30 Hz) of 16 kHz audio at hop 512: set `num_mels` to the input's
`input.mel.n_mels`.

Departures, on purpose:
  * Normalisation: LayerNorm over each frame's (frequency, channel) plane, learned per channel,
    in place of the paper's batch norm, so that a frame's output does not depend on the batch
    (padding rows included) and the model keeps no batch statistics (model state is {}).
  * Dropout (keep 1/0.25/0.25 after the convs, 0.5 after the fc in the paper) is omitted: the
    model is deterministic and `loss` ignores its rng.
  * Velocity labels are velocity / 127 (the paper: velocity / the piece's maximum velocity),
    since a crop does not know its piece's maximum; `decode` inverts it as round(127 v).
    The velocity loss is the 2018 paper's: the squared error over onset cells divided by their
    number (magenta's code averages over frames instead).

Labels come from the batch's frame features (data/midi.py): onsets [B, F, 88], pianoroll as the
frame labels, and offsets derived by `offsets_of`. This is a family of kind 'transcriber'
(models/__init__.py): `transcribe` in place of `generate`, scored by the `transcription`
evaluator, run on a wav by experiments/transcribe.py.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from data import midi
from data.specs import NUM_KEYS

HEADS = ('onset', 'offset', 'frame')  # the heads with a binary label and a BCE loss
_UNIFORM = nn.initializers.variance_scaling(2.0, 'fan_avg', 'uniform')  # the paper's convs, fc


def _boxed(init, axes):
  return nn.with_logical_partitioning(init, axes)


def _dense(features: int, axis: str, name: str, dtype, param_dtype) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name,
                  kernel_init=_boxed(_UNIFORM, ('embed', axis)),
                  bias_init=_boxed(nn.initializers.zeros, (axis,)))


class Acoustic(nn.Module):
  """One head's acoustic stack: mel [B, F, M] -> features [B, F, fc_size]."""
  filters: tuple[int, ...]
  pools: tuple[int, ...]
  fc_size: int
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self, mel: jax.Array) -> jax.Array:
    dtype, param_dtype = jnp.dtype(self.dtype), jnp.dtype(self.param_dtype)
    x = mel[..., None].astype(dtype)  # [B, F, M, 1]
    for i, (c, pool) in enumerate(zip(self.filters, self.pools)):
      x = nn.Conv(c, (3, 3), padding='SAME', dtype=dtype, param_dtype=param_dtype,
                  kernel_init=_boxed(_UNIFORM, (None, None, None, 'conv')),
                  bias_init=_boxed(nn.initializers.zeros, ('conv',)), name=f'conv{i}')(x)
      x = nn.LayerNorm(reduction_axes=(-2, -1), feature_axes=-1, dtype=jnp.float32,
                       param_dtype=param_dtype, name=f'norm{i}',
                       scale_init=_boxed(nn.initializers.ones, ('conv',)),
                       bias_init=_boxed(nn.initializers.zeros, ('conv',)))(x)
      x = jax.nn.relu(x).astype(dtype)  # [B, F, M_i, C_i]
      if pool > 1:
        x = nn.max_pool(x, (1, pool), strides=(1, pool), padding='VALID')
    x = x.reshape(*x.shape[:2], -1)  # [B, F, M' C]
    x = _dense(self.fc_size, 'mlp', 'fc', dtype, param_dtype)(x)
    return jax.nn.relu(x)  # [B, F, fc_size]


class BiLSTM(nn.Module):
  """x [B, F, D] -> [B, F, 2 units]: forward and backward LSTM outputs, concatenated."""
  units: int
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cell = lambda name: nn.OptimizedLSTMCell(
        self.units, dtype=jnp.dtype(self.dtype), param_dtype=jnp.dtype(self.param_dtype),
        kernel_init=_boxed(nn.initializers.lecun_normal(), ('embed', 'lstm')),
        recurrent_kernel_init=_boxed(nn.initializers.orthogonal(), (None, 'lstm')),
        bias_init=_boxed(nn.initializers.zeros, ('lstm',)), name=name)
    return nn.Bidirectional(nn.RNN(cell('forward')), nn.RNN(cell('backward')))(x)


class Model(nn.Module):
  """Onsets and Frames; `Model(**config.model)`. Logical axes: embed, mlp, conv, lstm, keys."""
  num_mels: int = 229  # the width of the 'mel' frames (input.mel.n_mels)
  filters: tuple[int, ...] = (48, 48, 96)  # conv channels of each acoustic stack
  pools: tuple[int, ...] = (1, 2, 2)  # max-pool width over frequency after each conv
  fc_size: int = 768
  lstm_units: int = 256  # per direction
  num_keys: int = NUM_KEYS
  sample_rate: int = 16000  # data facts (models.create): the frame grid's audio rate and hop
  hop_length: int = 512
  dtype: str = 'float32'  # convs, denses and LSTMs; norms, logits and losses stay float32
  param_dtype: str = 'float32'
  conditions = ('mel', 'pianoroll', 'onsets', 'velocities')  # (not a field) the keys it reads

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop_length

  def __post_init__(self):
    if len(self.filters) != len(self.pools) or min((*self.filters, *self.pools), default=1) < 1:
      raise ValueError(f'model.filters={tuple(self.filters)}, model.pools={tuple(self.pools)}: '
                       'expected positive sizes, one pool per conv')
    if self.num_mels // int(np.prod(self.pools)) < 1:
      raise ValueError(f'model.num_mels={self.num_mels}: expected at least the product of '
                       f'model.pools={tuple(self.pools)}')
    super().__post_init__()

  @nn.compact
  def __call__(self, mel: jax.Array) -> dict[str, jax.Array]:
    """mel [B, F, num_mels] -> {'onset', 'offset', 'frame': logits, 'velocity': the velocity
    regression}, each [B, F, num_keys] float32."""
    if mel.ndim != 3 or mel.shape[-1] != self.num_mels:
      raise ValueError(f'mel of shape {mel.shape}: expected [B, F, model.num_mels='
                       f'{self.num_mels}]')
    kw = {'dtype': self.dtype, 'param_dtype': self.param_dtype}
    stack = lambda name: Acoustic(self.filters, self.pools, self.fc_size, name=name, **kw)(mel)
    dtypes = (jnp.dtype(self.dtype), jnp.dtype(self.param_dtype))
    keys = lambda name: _dense(self.num_keys, 'keys', name, *dtypes)
    out = {}
    for head in ('onset', 'offset'):
      x = BiLSTM(self.lstm_units, name=f'{head}_lstm', **kw)(stack(f'{head}_stack'))
      out[head] = keys(f'{head}_out')(x).astype(jnp.float32)  # [B, F, K]
    out['velocity'] = keys('velocity_out')(stack('velocity_stack')).astype(jnp.float32)
    activation = jax.nn.sigmoid(keys('frame_activation')(stack('frame_stack')))
    # The frame head reads the onset and offset predictions but trains neither head.
    heads = [jax.lax.stop_gradient(jax.nn.sigmoid(out[h])) for h in ('onset', 'offset')]
    x = jnp.concatenate([activation.astype(jnp.float32)] + heads, axis=-1)  # [B, F, 3 K]
    x = BiLSTM(self.lstm_units, name='frame_lstm', **kw)(x.astype(dtypes[0]))
    out['frame'] = keys('frame_out')(x).astype(jnp.float32)
    return out


def offsets_of(pianoroll: jax.Array, onsets: jax.Array) -> jax.Array:
  """Offset labels [..., F, K] bool from frame labels: the last sounding frame of each note.

  Frame f is an offset of key k when k sounds in f and, in frame f + 1, either does not sound
  or starts a new note (a re-strike). The last frame of a crop is never an offset: the note may
  go on past the crop, so treating past-the-end as silence would mislabel it.
  """
  roll, on = jnp.asarray(pianoroll, bool), jnp.asarray(onsets, bool)
  ends = roll[..., :-1, :] & (~roll[..., 1:, :] | on[..., 1:, :])
  return jnp.concatenate([ends, jnp.zeros_like(roll[..., :1, :])], axis=-2)


def init(model: Model, rng: jax.Array, batch: dict) -> dict:
  """{'params': ...} of `model`, shaped by batch['mel'] (a batch of zeros will do)."""
  if 'mel' not in batch:
    raise ValueError(f'batch keys {sorted(batch)}: Onsets and Frames reads \'mel\' '
                     "(add it to config.input.frame_features)")
  return model.init(rng, jnp.asarray(batch['mel']))


def loss(model: Model, variables: dict, batch: dict, rng=None) -> tuple:
  """(loss, metrics, {}): the onset, offset and frame binary cross-entropies (each a mean over
  counted frames x keys) plus the velocity loss (squared error against velocity / 127 over the
  onset cells, divided by their number; 0 without onsets).

  Rows where batch['mask'] is False do not count. metrics: 'loss', '{onset,offset,frame,
  velocity}_loss' and 'weight', the number of counted frames.
  """
  del rng  # deterministic: no dropout
  out = model.apply(variables, jnp.asarray(batch['mel']))
  roll = jnp.asarray(batch['pianoroll'], bool)  # [B, F, K]
  onsets = jnp.asarray(batch['onsets'], bool)
  labels = {'onset': onsets, 'offset': offsets_of(roll, onsets), 'frame': roll}
  b, f, k = roll.shape
  rows = jnp.asarray(batch.get('mask', jnp.ones((b,), bool)), bool)[:, None, None]
  frames = jnp.sum(rows) * f
  metrics = {}
  for head in HEADS:
    bce = optax.sigmoid_binary_cross_entropy(out[head], labels[head].astype(jnp.float32))
    metrics[f'{head}_loss'] = jnp.sum(jnp.where(rows, bce, 0.)) / jnp.maximum(frames * k, 1)
  target = jnp.asarray(batch['velocities']).astype(jnp.float32) / 127.
  counted = onsets & rows
  error = jnp.where(counted, jnp.square(out['velocity'] - target), 0.)
  metrics['velocity_loss'] = jnp.sum(error) / jnp.maximum(jnp.sum(counted), 1)
  total = sum(metrics[f'{h}_loss'] for h in HEADS + ('velocity',))
  metrics.update(loss=total, weight=frames.astype(jnp.float32))
  return total, metrics, {}


def probabilities(model: Model, variables: dict, mel: jax.Array) -> dict[str, jax.Array]:
  """mel [B, F, num_mels] -> {'onset', 'offset', 'frame': sigmoid probabilities, 'velocity':
  the velocity output clipped to [0, 1]}, each [B, F, num_keys] float32."""
  out = model.apply(variables, jnp.asarray(mel))
  probs = {h: jax.nn.sigmoid(out[h]) for h in HEADS}
  probs['velocity'] = jnp.clip(out['velocity'], 0., 1.)
  return probs


def decode(onset_probs: np.ndarray, frame_probs: np.ndarray, velocity: np.ndarray,
           frame_rate: float, onset_threshold: float = 0.5, frame_threshold: float = 0.5,
           offset_probs: np.ndarray | None = None, offset_threshold: float = 0.5) -> midi.Notes:
  """The paper's decoding of one piece's predictions [F, 88] into notes.

  A note of a key starts at the first frame of each run of frames whose onset probability
  exceeds `onset_threshold` (the frame is active whatever its frame probability); it continues
  through the following frames while the onset stays on or the frame probability exceeds
  `frame_threshold`, and ends (exclusive) at the first frame where neither holds, at the start
  of the key's next onset run (a re-strike), or at the end of the roll. Frame activity without
  an onset starts nothing. With `offset_probs`, a frame whose offset probability exceeds
  `offset_threshold` is also the last of its note (the paper leaves it unused: magenta's
  predict_offset_threshold = 0).

  Args:
    onset_probs, frame_probs: [F, 88] probabilities (`probabilities` of one row).
    velocity: [F, 88] velocity outputs in [0, 1]; a note's is read at its onset frame.
    frame_rate: frames per second (sample_rate / hop_length).

  Returns:
    `Notes` on times frame / frame_rate: onset = start frame, offset = end frame; pitch =
    21 + key; velocity = round(127 v) clipped to 1..127.
  """
  onset_probs, frame_probs, velocity = (np.asarray(a, np.float32)
                                        for a in (onset_probs, frame_probs, velocity))
  if not onset_probs.shape == frame_probs.shape == velocity.shape or onset_probs.ndim != 2:
    raise ValueError(f'onset, frame and velocity shapes {onset_probs.shape}, '
                     f'{frame_probs.shape}, {velocity.shape}: expected equal [F, 88]')
  on = onset_probs > onset_threshold  # [F, K]
  starts = on & ~np.pad(on, ((1, 0), (0, 0)))[:-1]
  going = (on | (frame_probs > frame_threshold)) & ~starts
  if offset_probs is not None:
    last = np.asarray(offset_probs) > offset_threshold
    going &= ~np.pad(last, ((1, 0), (0, 0)))[:-1]
  num_frames = on.shape[0]
  # Key-major with a stop column at F, so that each key's notes end within its own row.
  stops = np.pad(~going.T, ((0, 0), (0, 1)), constant_values=True).ravel()  # [K (F + 1)]
  stop_at = np.flatnonzero(stops)
  key, start = np.nonzero(starts.T)
  first = key * (num_frames + 1) + start
  end = stop_at[np.searchsorted(stop_at, first, side='right')] - key * (num_frames + 1)
  vel = np.clip(np.round(127. * velocity[start, key]), 1, 127)
  return midi.make_notes(start / frame_rate, end / frame_rate, key + midi.MIN_PITCH, vel)


_probabilities = jax.jit(probabilities, static_argnums=0)


def transcribe(model: Model, variables: dict, mel, onset_threshold: float = 0.5,
               frame_threshold: float = 0.5) -> list[midi.Notes]:
  """mel [B, F, num_mels] -> the decoded notes of each row (times from the row's frame 0)."""
  probs = jax.device_get(_probabilities(model, variables, jnp.asarray(mel, jnp.float32)))
  return [decode(probs['onset'][i], probs['frame'][i], probs['velocity'][i], model.frame_rate,
                 onset_threshold, frame_threshold) for i in range(len(probs['onset']))]


def label_notes(model: Model, pianoroll, onsets, velocities) -> midi.Notes:
  """The notes of one row's frame labels [F, 88], decoded as `decode` reads predictions: the
  reference the `transcription` evaluator scores against, on the same frame grid."""
  return decode(np.asarray(onsets, np.float32), np.asarray(pianoroll, np.float32),
                np.asarray(velocities, np.float32) / 127., model.frame_rate)
