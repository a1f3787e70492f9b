"""Music translation against paired ground truth: each test score, played by every instrument,
translated to every other and compared with the target instrument's rendering of that score.

    config.evals.translation = dict(type='translation', every_steps=0, split='test',
                                    seconds=2.0, scores=None, batch_size=16, temperature=1.0,
                                    classifier_steps=500, transcriber=None)

The multi-instrument dataset (data/instruments.py, config.input.instruments) renders each score
with every instrument of data.specs.INSTRUMENTS from the same MIDI, so the translation of score
s from instrument a to b has an exact reference: the rendering of s by b. The clips are the
first `seconds` of each score's first segment in `split` (its first `scores` scores, in order),
one per instrument; the model's `translate` maps each to every instrument (b == a included:
the reconstruction), drawing with fold_in(key(config.seed + 3), b). Figures, per pair of
instruments 'a_to_b' and as the mean over the pairs a != b (the plain key):

    log_mel_l1        mean |log mel(translation) - log mel(reference)|, nats, with
                      config.input.mel's settings at the dataset's hop (lower is better)
    mr_stft           the multi-resolution STFT distance (data/spectral.py; lower is better)
    target_accuracy   the fraction of translations that the instrument classifier below takes
                      for the target instrument (does it sound like b?)
    note_f1           with `transcriber` (the workdir of a transcriber, models/onsets_frames):
                      mir_eval's note F1 of its transcription of the translation against the
                      score's notes on the frame grid (does it keep the music?)

`baseline()` gives the same figures for two references that need no model: 'identity_<key>',
the untranslated input (a translator must beat it on target_accuracy), and 'target_<key>' per
target 'b', the reference itself (log-mel L1 and MR-STFT 0; the classifier's accuracy and the
transcriber's F1 on real renderings: the ceilings). `report` prints them as domain x domain
tables.

The instrument classifier is trained here on the split 'train' (so on no test score): each
segment's log-mel frames (the mel above) in random crops of `seconds`, as the mean and standard
deviation over time of each band with the clip's mean level removed (gain-invariant), standardised,
into a softmax regression trained `classifier_steps` full-batch Adam steps, seeded by
config.seed: a deterministic function of the data. Process 0 reads and translates; every
process takes part in gathering the parameters.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data import audio as audio_lib
from data import pipeline
from data import spectral
from data import specs
from data import transcription_metrics
from experiments import checkpoint
from experiments import sharding
from experiments import state as state_lib
import models

METRICS = ('log_mel_l1', 'mr_stft', 'target_accuracy', 'note_f1')
_CROPS_PER_SEGMENT = 4  # random crops of each training segment for the classifier


def _input(config: ml_collections.ConfigDict, split: str) -> ml_collections.ConfigDict:
  if not config.input.get('instruments'):
    raise ValueError('config.input.instruments is False: the translation evaluator reads the '
                     'multi-instrument dataset (set config.input.instruments=True)')
  c = ml_collections.ConfigDict(config.input.to_dict())
  c.update(split=split, frame_features=('pianoroll', 'onsets', 'velocities'))
  return c


def paired_clips(config: ml_collections.ConfigDict, split: str, seconds: float,
                 scores: int | None = None) -> dict:
  """The first `seconds` of the first segment of each score of `split` that every instrument
  plays: {'audio' [S, K, T] float32, 'instruments' (K ids), 'midi_filename' [S], and the
  score's frame labels 'pianoroll', 'onsets', 'velocities' [S, F, 88]}."""
  c = _input(config, split)
  source, _ = pipeline.load_source(c)
  d = specs.dataset(c.dataset)
  samples = min(int(round(seconds * d.sample_rate)), d.segment_samples)
  samples = -(-samples // d.hop_length) * d.hop_length
  frames = samples // d.hop_length
  found = {}  # midi_filename -> {instrument: record}
  for i in range(len(source)):
    ex = source[i]
    if int(ex['start_sample']) == 0:
      found.setdefault(ex['midi_filename'].decode(), {})[int(ex['instrument'])] = ex
  ids = sorted(set().union(*found.values())) if found else []
  names = [n for n in sorted(found) if len(found[n]) == len(ids)][:scores]
  if not names or len(ids) < 2:
    raise ValueError(f'split {split!r} holds no score played by two instruments or more')
  first = lambda n: found[n][ids[0]]
  return {
      'audio': np.stack([[audio_lib.from_int16(found[n][k]['audio'][:samples]) for k in ids]
                         for n in names]).astype(np.float32),
      'instruments': tuple(ids),
      'midi_filename': names,
      **{key: np.stack([first(n)[key][:frames] for n in names])
         for key in ('pianoroll', 'onsets', 'velocities')},
  }


# ---------------------------------------------------------------------------------------------
# The instrument classifier.


@functools.partial(jax.jit, static_argnames=('mel',))
def _clip_features(audio: jax.Array, mel: tuple) -> jax.Array:
  """[N, T] float audio -> [N, 2 M]: per band, the mean and standard deviation over time of
  the log-mel frames, less the clip's mean level."""
  m = spectral.log_mel_spectrogram(audio, **dict(mel))  # [N, M, F]
  m = m - jnp.mean(m, axis=(-1, -2), keepdims=True)
  return jnp.concatenate([jnp.mean(m, -1), jnp.std(m, -1)], -1)


def _mel(config: ml_collections.ConfigDict) -> tuple:
  return tuple(sorted(specs.mel_kwargs(config.input).items()))


@jax.jit
def _logits(params, features):
  return ((features - params['mean']) / params['scale']) @ params['w'] + params['b']


def train_classifier(config: ml_collections.ConfigDict, seconds: float, steps: int) -> dict:
  """A softmax regression from clip features to instruments, trained on the split 'train'
  (module docstring); its parameters."""
  c = _input(config, 'train')
  source, _ = pipeline.load_source(c)
  d = specs.dataset(c.dataset)
  n = min(int(round(seconds * d.sample_rate)), d.segment_samples)
  rng = np.random.default_rng(config.seed)
  clips, labels = [], []
  for i in range(len(source)):
    ex = source[i]
    for start in rng.integers(0, d.segment_samples - n + 1, _CROPS_PER_SEGMENT):
      clips.append(audio_lib.from_int16(ex['audio'][start:start + n]))
      labels.append(int(ex['instrument']))
  mel = _mel(config)
  features = np.concatenate([np.asarray(_clip_features(jnp.asarray(np.stack(clips[j:j + 64])),
                                                       mel))
                             for j in range(0, len(clips), 64)])
  labels = np.asarray(labels)
  k = len(specs.INSTRUMENTS)
  params = {'mean': features.mean(0), 'scale': features.std(0) + 1e-6,
            'w': np.zeros((features.shape[1], k), np.float32), 'b': np.zeros(k, np.float32)}
  trainable = {'w': params['w'], 'b': params['b']}
  opt = optax.adamw(1e-2, weight_decay=1e-3)

  @jax.jit
  def step(trainable, opt_state):
    def loss(t):
      logits = _logits({**params, **t}, features)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    grads = jax.grad(loss)(trainable)
    updates, opt_state = opt.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state

  opt_state = opt.init(trainable)
  for _ in range(steps):
    trainable, opt_state = step(trainable, opt_state)
  return {**params, **jax.device_get(trainable)}


def classify(params: dict, config: ml_collections.ConfigDict, audio: np.ndarray) -> np.ndarray:
  """The classifier's instrument ids [N] of float audio clips [N, T]."""
  return np.asarray(jnp.argmax(_logits(params, _clip_features(jnp.asarray(audio),
                                                              _mel(config))), -1))


# ---------------------------------------------------------------------------------------------
# Scoring.


class _Transcriber:
  """A transcriber's run (models/onsets_frames) that scores clips' notes against the score."""

  def __init__(self, workdir: str, input_config: ml_collections.ConfigDict):
    state, self.config = checkpoint.load(workdir, keys=state_lib.VARIABLE_KEYS)
    self.family = models.family(self.config.model_name)
    if not hasattr(self.family, 'transcribe'):
      raise ValueError(f'transcriber={workdir!r} holds a {self.config.model_name}, not a '
                       'transcriber')
    grid = lambda c: (specs.sample_rate(c), specs.dataset(c.dataset).hop_length)
    if grid(self.config.input) != grid(input_config):
      raise ValueError(f'transcriber={workdir!r} reads audio at (rate, hop) '
                       f'{grid(self.config.input)}, the translator\'s data '
                       f'{grid(input_config)}: the score\'s frame labels must be its frames')
    self.model = models.create(self.config)
    self.variables = state_lib.variables(state)

  def note_f1(self, audio: np.ndarray, labels: dict, rows) -> np.ndarray:
    """Note F1 [N] of clips `audio` [N, T] against the score rows `rows` of `labels`."""
    mel = np.asarray(pipeline.mel_features(jnp.asarray(audio), self.config.input))
    ests = self.family.transcribe(self.model, self.variables, mel)
    out = []
    for est, s in zip(ests, rows):
      ref = self.family.label_notes(self.model, labels['pianoroll'][s], labels['onsets'][s],
                                    labels['velocities'][s])
      out.append(transcription_metrics.note_scores(ref, est)['note_f1'] if len(ref) else np.nan)
    return np.asarray(out)


class Evaluator:
  """Translation figures of a translator against paired renderings, with their baselines."""

  def __init__(self, context, split: str = 'test', seconds: float = 2.0,
               scores: int | None = None, batch_size: int = 16, temperature: float = 1.0,
               classifier_steps: int = 500, transcriber: str | None = None):
    if not hasattr(context.family, 'translate'):
      raise ValueError(f'config.evals: the translation evaluator scores translators; '
                       f'{context.config.model_name} has no `translate`')
    self.context, self.split, self.seconds, self.scores = context, split, seconds, scores
    self.batch_size, self.temperature = batch_size, temperature
    self.classifier_steps, self.transcriber_dir = classifier_steps, transcriber
    self._clips = self._classifier = self._transcriber = None

  def _setup(self):
    if self._clips is None:
      config = self.context.config
      self._clips = paired_clips(config, self.split, self.seconds, self.scores)
      self._classifier = train_classifier(config, self.seconds, self.classifier_steps)
      if self.transcriber_dir:
        self._transcriber = _Transcriber(self.transcriber_dir, config.input)
    return self._clips

  def _score(self, outputs: dict) -> dict:
    """Figures of {(a, b): audio [S, T]} against the clips' renderings by b."""
    clips, config = self._clips, self.context.config
    ids = clips['instruments']
    mel = dict(_mel(config))
    heard = {}  # id(audio) -> (its classes, its note F1): the identity's clips recur per target

    def hear(audio):
      if id(audio) not in heard:
        heard[id(audio)] = (classify(self._classifier, config, audio),
                            None if self._transcriber is None else float(np.nanmean(
                                self._transcriber.note_f1(audio, clips, range(len(audio))))))
      return heard[id(audio)]

    out = {}
    for (a, b), audio in outputs.items():
      ref = clips['audio'][:, ids.index(b)]
      d = spectral.spectral_distances(jnp.asarray(audio), jnp.asarray(ref), **mel)
      classes, note_f1 = hear(audio)
      pair = {'log_mel_l1': float(jnp.mean(d['log_mel_l1'])),
              'mr_stft': float(jnp.mean(d['mr_stft'])),
              'target_accuracy': float(np.mean(classes == b))}
      if note_f1 is not None:
        pair['note_f1'] = note_f1
      for key, value in pair.items():
        out[f'{key}/{specs.INSTRUMENTS[a]}_to_{specs.INSTRUMENTS[b]}'] = value
    off = [(a, b) for a, b in outputs if a != b]
    for key in METRICS:
      values = [out.get(f'{key}/{specs.INSTRUMENTS[a]}_to_{specs.INSTRUMENTS[b]}')
                for a, b in off]
      if values and values[0] is not None:
        out[key] = float(np.mean(values))
    return out

  def baseline(self) -> dict:
    clips = self._setup()
    ids = clips['instruments']
    source = {a: clips['audio'][:, i] for i, a in enumerate(ids)}
    identity = self._score({(a, b): source[a] for a in ids for b in ids})
    out = {f'identity_{k}': v for k, v in identity.items()}
    for key, value in identity.items():  # the diagonal is the target itself: 'm/b_to_b'
      metric, _, pair = key.partition('/')
      a, _, b = pair.partition('_to_')
      if pair and a == b:
        out[f'target_{metric}/{b}'] = value
    for key in METRICS:
      values = [v for k, v in out.items() if k.startswith(f'target_{key}/')]
      if values:
        out[f'target_{key}'] = float(np.mean(values))
    return out

  def run(self, state: dict) -> dict:
    c = self.context
    variables = sharding.to_host(state_lib.variables(state))  # a collective: every process joins
    if jax.process_index() != 0:
      return {}
    clips = self._setup()
    ids = clips['instruments']
    s = len(clips['midi_filename'])
    audio = clips['audio'].reshape(s * len(ids), -1)  # row r: score r // K, instrument r % K
    source = np.tile(np.asarray(ids, np.int32), s)
    outputs = {}
    for b in ids:
      rng = jax.random.fold_in(jax.random.key(c.config.seed + 3), b)
      rows = []
      for j in range(0, len(audio), self.batch_size):
        n = min(self.batch_size, len(audio) - j)
        rows.append(np.asarray(c.family.translate(
            c.model, variables, jax.random.fold_in(rng, j), audio[j:j + n], source[j:j + n],
            np.full(n, b, np.int32), temperature=self.temperature)))
      translated = np.concatenate(rows).reshape(s, len(ids), -1)
      for i, a in enumerate(ids):
        outputs[(a, b)] = translated[:, i]
    return self._score(outputs)

  @staticmethod
  def report(record: dict) -> str:
    """Markdown domain x domain tables (rows: source, columns: target) of each metric in
    `record` (the evaluator's figures and its baseline's)."""
    lines = []
    for key in METRICS:
      pairs = {k.split('/')[1]: v for k, v in record.items() if k.startswith(f'{key}/')}
      if not pairs:
        continue
      names = [n for n in specs.INSTRUMENTS if f'{n}_to_{n}' in pairs]
      lines += ['', f'{key} (rows: source, columns: target; mean over a != b: '
                f'{record.get(key, float("nan")):.3f}, identity '
                f'{record.get(f"identity_{key}", float("nan")):.3f})', '',
                '| from \\ to | ' + ' | '.join(names) + ' |',
                '|---' * (len(names) + 1) + '|']
      for a in names:
        lines.append(f'| {a} | ' + ' | '.join(
            f'{pairs[f"{a}_to_{b}"]:.3f} ({record.get(f"identity_{key}/{a}_to_{b}", np.nan):.3f})'
            for b in names) + ' |')
      target = [record.get(f'target_{key}/{b}') for b in names]
      if all(t is not None for t in target):
        lines.append('| *target itself* | ' + ' | '.join(f'{t:.3f}' for t in target) + ' |')
    return '\n'.join(lines[1:])
