"""The data facts every other part reads: dataset settings, the input config, batch shapes.

This module is plain Python and numpy (no JAX, grain or TFDS), so that experiment configs,
`launch/sweep.py` and model factories can read it anywhere, a login node included. It is the
one source of:

  * a dataset's sample rate, segment length and frame hop, parsed from its name ('16k', '24k',
    'sr{rate}_seg{samples}_hop{hop}'); data/maestro.py builds exactly these configs;
  * the frame features a batch can carry and their widths;
  * `input_config()`, the documented `config.input` section of every experiment (and
    `events_input_config()`, that of a model over performance events);
  * `batch_spec(...)`, the shapes and dtypes of a batch of an input config (what init, memory
    plans and benchmarks build dummy batches from).

A batch is a dict of arrays with a leading batch axis:

    audio        [B, T] int32 codes ('mu_law', 'linear') or float32 in [-1, 1] ('float')
    pianoroll, onsets [B, F, 88] bool, velocities [B, F, 88] uint8   (when asked for)
    mel          [B, F, n_mels] float32 log-mel frames of the audio (when asked for; its
                 settings are `input.mel`, its hop the dataset's)
    instrument   [B] int32   the piece's instrument, an index into INSTRUMENTS (only with
                             input.instruments: the multi-instrument dataset)
    index        [B] int32   the record's position in the split (for bookkeeping)
    start_sample [B] int32   the crop's offset in the resampled piece
    mask         [B] bool    only with drop_remainder=False: False on padding rows

A batch of performance events (`events_input_config`, data/events_pipeline.py) holds 'events'
[B, L] int32 and 'event_mask' [B, L] bool instead of audio and frames.

Frame f of a crop covers audio samples [f hop, (f + 1) hop): F = ceil(T / hop). The mel frame f
is the STFT frame centred on sample f hop of the crop (librosa's `center=True` convention),
computed from the piece around the crop, so that it equals frame start / hop + f of
`data.spectral.log_mel_spectrogram` of the whole segment (data/pipeline.py, `mel_features`).
"""

import dataclasses
import re

import ml_collections
import numpy as np

NUM_KEYS = 88  # piano keys, MIDI notes 21..108 (A0..C8)
CSV_COLUMNS = ('canonical_composer', 'canonical_title', 'split', 'year', 'midi_filename',
               'audio_filename', 'duration')  # the MAESTRO CSV (v1-v3)
# name: (width, dtype); the width of 'mel' is input.mel.n_mels
FRAME_FEATURES = {'pianoroll': (NUM_KEYS, np.bool_), 'onsets': (NUM_KEYS, np.bool_),
                  'velocities': (NUM_KEYS, np.uint8), 'mel': (None, np.float32)}
ENCODINGS = ('mu_law', 'linear', 'float')
# The instruments (domains) of the multi-instrument corpus, in id order: a batch's 'instrument'
# [B] int32 is an index into this tuple (data/synth.py voices each; data/instruments.py reads
# the corpus's `instrument` column).
INSTRUMENTS = ('piano', 'organ', 'harpsichord', 'strings', 'mallet')


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Sample rate, segment length and frame hop of a Maestro dataset, named after them."""
  name: str
  sample_rate: int
  segment_samples: int
  hop_length: int
  description: str = 'custom'

  def __post_init__(self):
    if min(self.sample_rate, self.segment_samples, self.hop_length) <= 0:
      raise ValueError(f'dataset {self.name}: sample rate, segment and hop must be positive')
    if self.segment_samples % self.hop_length:
      raise ValueError(f'Maestro config {self.name}: segment_samples={self.segment_samples} is '
                       f'not a multiple of hop_length={self.hop_length}')

  @property
  def num_frames(self) -> int:
    return self.segment_samples // self.hop_length

  @classmethod
  def make(cls, sample_rate: int, segment_samples: int, hop_length: int) -> 'Dataset':
    return cls(f'sr{sample_rate}_seg{segment_samples}_hop{hop_length}', sample_rate,
               segment_samples, hop_length)


NAMED = (
    Dataset('16k', 16000, 65536, 512, '16 kHz, 65,536-sample segments, 31.25 frames/s'),
    Dataset('24k', 24000, 98304, 768, '24 kHz, 98,304-sample segments, 31.25 frames/s'),
)


def dataset(name: str) -> Dataset:
  """The dataset of `config.input.dataset`; ValueError naming the valid forms."""
  for d in NAMED:
    if d.name == name:
      return d
  m = re.fullmatch(r'sr(\d+)_seg(\d+)_hop(\d+)', str(name))
  if not m:
    raise ValueError(f"Maestro config {name!r}: expected one of "
                     f"{', '.join(d.name for d in NAMED)} or 'sr{{rate}}_seg{{samples}}_hop{{hop}}'")
  return Dataset.make(*map(int, m.groups()))


def input_config() -> ml_collections.ConfigDict:
  """`config.input` of an experiment, with every key documented."""
  c = ml_collections.ConfigDict()
  c.dataset = '16k'  # Maestro builder config: '16k', '24k' or 'sr{rate}_seg{samples}_hop{hop}'
  c.manual_dir = ml_collections.config_dict.placeholder(str)  # MAESTRO dir; None: embedded corpus
  c.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir; None: TFDS default
  c.split = 'train'
  c.batch_size = 16  # global: summed over all processes
  c.crop_samples = ml_collections.config_dict.placeholder(int)  # None: whole segments
  c.encoding = 'mu_law'  # one of ENCODINGS
  c.bits = 8  # bits of the 'mu_law' / 'linear' codes
  c.frame_features = ()  # a subset of FRAME_FEATURES
  # True: the multi-instrument dataset (data/instruments.py; every score in every one of
  # INSTRUMENTS), whose batches carry 'instrument' [B] int32; False: the piano dataset.
  c.instruments = False
  c.mel = mel_config()  # the 'mel' frame feature; its hop is the dataset's
  c.shuffle = True
  c.num_epochs = ml_collections.config_dict.placeholder(int)  # None: repeat forever
  c.drop_remainder = True  # False: pad the last batch and add `mask`
  c.seed = 0
  c.worker_count = 0  # grain worker processes; 0 reads and transforms in this process
  c.worker_buffer_size = 2  # batches each worker prepares ahead
  c.prepare_workers = 2  # processes for building the dataset if it is not there yet
  return c


def events_input_config() -> ml_collections.ConfigDict:
  """`config.input` of a model over performance events (data/events_pipeline.py: windows of the
  MIDI dataset's pieces, data/maestro_midi.py), with every key documented."""
  return ml_collections.ConfigDict({
      'kind': 'events',  # what tells this section from `input_config()`'s (see `is_events`)
      'manual_dir': ml_collections.config_dict.placeholder(str),  # None: the embedded corpus
      'data_dir': ml_collections.config_dict.placeholder(str),  # TFDS data_dir
      'split': 'train',
      'batch_size': 16,  # global
      'window': 2048,  # events per example
      'augment': True,  # the Music Transformer's transpositions and time stretches
      'sample_rate': 16000,  # the rate a model renders its events at (its `generate`)
      'shuffle': True,
      'num_epochs': ml_collections.config_dict.placeholder(int),  # None: repeat forever
      'drop_remainder': True,  # False: pad the last batch and add `mask`
      'seed': 0,
      'worker_count': 0,
      'worker_buffer_size': 2,
  })


def is_events(input_config: ml_collections.ConfigDict) -> bool:
  """Whether `input_config` is `events_input_config()`'s kind (batches of events, not audio)."""
  return input_config.get('kind', 'audio') == 'events'


def mel_config() -> ml_collections.ConfigDict:
  """`config.input.mel`: the log-mel frames of the 'mel' feature (data.spectral's argument
  names). The hop is the dataset's, so that mel frames align with the other frame features."""
  c = ml_collections.ConfigDict()
  c.n_fft = 2048
  c.win_length = ml_collections.config_dict.placeholder(int)  # None: n_fft
  c.window = 'hann'
  c.n_mels = 80
  c.fmin = 0.0
  c.fmax = ml_collections.config_dict.placeholder(float)  # None: sample_rate / 2
  c.htk = False
  c.norm = 'slaney'
  c.power = 1.0  # 1: magnitude, 2: power
  c.floor = 1e-5  # log(max(mel, floor)): -100 dB of full-scale amplitude
  return c


def mel_kwargs(input_config: ml_collections.ConfigDict) -> dict:
  """data.spectral.log_mel_spectrogram's keyword arguments for `input_config.mel`."""
  m = input_config.mel
  return dict(sr=sample_rate(input_config), n_fft=m.n_fft,
              hop_length=dataset(input_config.dataset).hop_length, win_length=m.win_length,
              window=m.window, n_mels=m.n_mels, fmin=m.fmin, fmax=m.fmax, htk=m.htk,
              norm=m.norm, power=m.power, floor=m.floor)


def sample_rate(input_config: ml_collections.ConfigDict) -> int:
  """The audio rate of an input config: that of its dataset (of events: the rendering's)."""
  if is_events(input_config):
    return input_config.sample_rate
  return dataset(input_config.dataset).sample_rate


def crop_samples(input_config: ml_collections.ConfigDict) -> int:
  """T of the config's batches: the crop, or the dataset's whole segment."""
  return input_config.crop_samples or dataset(input_config.dataset).segment_samples


def check(input_config: ml_collections.ConfigDict) -> None:
  """ValueError naming the key unless the config's encoding and frame features are known."""
  if input_config.encoding not in ENCODINGS:
    raise ValueError(f'input.encoding={input_config.encoding!r}: expected one of '
                     f'{", ".join(ENCODINGS)}')
  frame_width(input_config, input_config.frame_features, 'input.frame_features')
  if 'mel' in input_config.frame_features:
    m, rate = input_config.mel, sample_rate(input_config)
    win = m.n_fft if m.win_length is None else m.win_length
    if not 0 < win <= m.n_fft:
      raise ValueError(f'input.mel.win_length={m.win_length}: expected 1..n_fft={m.n_fft}')
    if m.n_mels <= 0:
      raise ValueError(f'input.mel.n_mels={m.n_mels}: expected a positive number')
    fmax = rate / 2 if m.fmax is None else m.fmax
    if not 0 <= m.fmin < fmax <= rate / 2:
      raise ValueError(f'input.mel: expected 0 <= fmin={m.fmin} < fmax={m.fmax} <= '
                       f'{rate / 2} (half the sample rate)')


def feature_width(input_config: ml_collections.ConfigDict, key: str) -> int:
  """The width of frame feature `key` (n_mels for 'mel')."""
  width = FRAME_FEATURES[key][0]
  return input_config.mel.n_mels if width is None else width


def frame_width(input_config: ml_collections.ConfigDict, keys, where: str) -> int:
  """The summed width of frame features `keys` (ValueError naming `where` for unknown ones)."""
  unknown = [k for k in keys if k not in FRAME_FEATURES]
  if unknown:
    raise ValueError(f'{where}={tuple(keys)}: {unknown} not in {tuple(FRAME_FEATURES)}')
  return sum(feature_width(input_config, k) for k in keys)


def batch_spec(input_config: ml_collections.ConfigDict, batch_size: int | None = None,
               samples: int | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{key: (shape, dtype)} of a training batch of `input_config` (its global batch and crop,
  unless given): 'audio' and each of its frame features; of events, 'events' and 'event_mask'
  [B, window (or `samples`)]; with input.instruments, 'instrument' [B]."""
  b = input_config.batch_size if batch_size is None else batch_size
  if is_events(input_config):
    n = input_config.window if samples is None else samples
    return {'events': ((b, n), np.dtype(np.int32)), 'event_mask': ((b, n), np.dtype(np.bool_))}
  check(input_config)
  t = crop_samples(input_config) if samples is None else samples
  audio = np.float32 if input_config.encoding == 'float' else np.int32
  out = {'audio': ((b, t), np.dtype(audio))}
  frames = -(-t // dataset(input_config.dataset).hop_length)
  for k in input_config.frame_features:
    out[k] = ((b, frames, feature_width(input_config, k)), np.dtype(FRAME_FEATURES[k][1]))
  if input_config.get('instruments'):
    out['instrument'] = ((b,), np.dtype(np.int32))
  return out


def zeros_batch(input_config: ml_collections.ConfigDict, batch_size: int | None = None,
                samples: int | None = None) -> dict[str, np.ndarray]:
  """A batch of zeros shaped as `batch_spec` (for init and shape inference)."""
  return {k: np.zeros(shape, dtype) for k, (shape, dtype) in
          batch_spec(input_config, batch_size, samples).items()}
