"""Model families and the contract every one of them keeps.

This docstring is the authority on the contract; README.md ("Adding a model family") says which
files a new family writes.

A family is the package (or module) `models/<name>`, picked by `config.model_name` and found by
`family(name)` through importlib: nothing registers itself on import. It exports:

  Model        a Flax linen Module, built by `create(config)` as Model(**config.model) plus
               the data facts below. It names its parameters' axes logically
               (`nn.with_logical_partitioning`), so that `config.sharding_rules` shard them.
               `Model.conditions` lists the batch keys it reads besides 'audio' (frame
               features such as 'pianoroll' or 'mel', or an id key such as 'instrument').

  init(model, rng, batch) -> variables
               {'params': ..., <other collections>...}. `batch` is a batch of zeros shaped as
               training batches (data.specs.zeros_batch), so a family sees the shapes it will
               train on. Collections other than 'params' (running codebooks, ActNorm's
               data-dependent init, batch statistics) are the model state: the trainer keeps
               them in the train state as state['model_state'] and checkpoints them.

  loss(model, variables, batch, rng) -> (loss, metrics, model_state)
               The family owns everything between a batch and its loss: teacher forcing,
               masks, conditioning transforms, dequantisation noise, the noise a flow draws.
               `loss` is the scalar the gradients follow, in nats per audio sample for
               likelihood families. `metrics` is a flat dict of scalar means over
               `metrics['weight']` audio samples (the trainer and the evaluators average them
               with that weight; a batch's 'mask' [B] marks the rows that count); likelihood
               families report 'nll' (nats) and 'bits_per_sample', under the quantisation
               convention they state (code models: bits per 8-bit mu-law code; continuous
               densities: bits per 16-bit sample with uniform dequantisation). `model_state`
               is the updated model state ({} if none). `rng` is fold_in(key, step), so a
               resumed run draws what an uninterrupted one would; deterministic families
               ignore it.

  generate(model, variables, rng, num_samples, *, batch=1, prompt=None, cond=None,
           temperature=1.0, chunk_samples=16000, first_stream=0) -> Iterator[np.ndarray]
               Float32 audio chunks [B, <= chunk_samples] in [-1, 1], `num_samples` per
               stream in all, so that experiments/sample.py and the notebooks need no
               per-family code. `variables` is the whole variable tree; `prompt` float audio
               [B, P] to continue (families that cannot continue audio raise ValueError);
               `cond` a dict of batch keys (`Model.conditions`) with a leading axis of B;
               sample i of a run draws with keys that depend on (rng, position,
               first_stream + i) only, so that processes sampling slices of the streams
               together write what one process would. (A transcriber exports `transcribe`
               instead: see the kinds below.)

Families that hold several parameter trees (a GAN's generator and discriminator, a
distillation's frozen teacher and its student) keep the trainable ones as subtrees of 'params'
and frozen ones in the model state, and train with their own trainer
(experiments/train_<game>.py), which gives each trainable subtree its own optimiser or loads
the frozen ones; `init`, `loss` (the trainer names which loss: e.g. `generator_loss` /
`discriminator_loss`) and `generate` stay as above.

What a family exports besides, by kind; each capability comes with its contract test in
tests/models/test_<name>.py:

  autoregressive  init_cache(model, batch) and step(model, params, cache, x, ...) ->
                  (output, cache), a cached sampler on lax.scan, and `generate` taking
                  `resume` / `keep` besides (a saved sampler state to continue from / a dict
                  receiving it: layers/autoregressive.keep_state); tests: step-by-step outputs
                  equal the parallel pass, and output t has zero gradient w.r.t. input > t.
  flow            forward(model, variables, x, cond) -> (z, log_det) and
                  inverse(model, variables, z, cond) -> x; tests: inverse(forward(x)) == x,
                  and log_det equals a brute-force Jacobian's on a tiny input.
  autoencoder     encode(model, variables, audio codes) -> encodings [B, F, D],
                  quantize(model, variables, z) -> (straight-through z_q, codes) and
                  decode(model, variables, rng, codes) -> the audio codes its decoders draw
                  (models/vqvae: a level of a hierarchy, its codebook in the model state
                  'vq', the frozen levels below in 'levels', loaded by
                  experiments/train_vqvae.py, which also trains a prior over the top level,
                  models/vqvae_prior); tests: shapes, the straight-through gradient, codebook
                  updates against their closed form, restarts, the encoder's receptive field.
  gan             fake(model, variables, batch, rng) -> the generator's output,
                  discriminator_loss(model, variables, batch, fake, rng) -> (loss, metrics,
                  model_state) and generator_loss(model, variables, batch, fake, rng) ->
                  (loss, metrics), over params {'generator', 'discriminator'}
                  (models/layers/gan.py; trained by experiments/train_gan.py); tests: the
                  sharded losses equal the single-device ones, the objectives, the gradient
                  penalty against finite differences, the random windows and shifts follow
                  the seed.
  distillation    a flow (forward, inverse) whose `loss` fits a frozen teacher: teacher_of(model)
                  -> the teacher's Model, its parameters the model state collection 'teacher'
                  (models/layers/distillation.py; trained by experiments/train_distill.py,
                  which loads them from the teacher's workdir); tests: the KL terms against
                  closed forms and Monte Carlo, the student's causality in its noise, its
                  density against the change of variables, the sharded loss, exact resume.

  symbolic        a model of performance events (data/midi_events.py), not of audio: its
                  config.input is data/specs.events_input_config() and its batches
                  data/events_pipeline.py's ('events' [B, L] int32, 'event_mask' [B, L]), so the
                  trainer, the likelihood evaluator and the checkpoints serve it unchanged;
                  `loss` is in nats per event ('nll', 'bits_per_event', 'weight' the events
                  counted); sample_events(model, variables, rng, num_events, batch=, primer=,
                  temperature=, first_stream=) -> events [B, N] on a KV cache, and `generate`
                  renders the events it draws with the corpus's piano (data/synth.py) at
                  model.sample_rate, handing them to a `keep` dict for MIDI files
                  (models/music_transformer); tests: the cached step equals the parallel pass,
                  causality, relative attention against its explicit form.

  transcriber     a model from audio to notes, not of audio (models/onsets_frames): it trains on
                  the audio input's 'mel' frames with its MIDI frame features as labels, and
                  exports transcribe(model, variables, mel [B, F, n_mels]) -> [data.midi.Notes]
                  (one per row, times from its frame 0) in place of `generate`, and
                  label_notes(model, pianoroll, onsets, velocities) -> Notes, a row's frame
                  labels decoded by the same rule (the reference); the
                  `transcription` evaluator scores it with mir_eval and experiments/transcribe.py
                  writes a wav's MIDI; tests: note decoding on hand-made rolls, the losses, the
                  stopped gradients of the frame head.

  translator      a model that renders audio of one instrument as another (models/umt, a
                  Universal Music Translation Network; models/blow, a flow): it trains on the
                  multi-instrument dataset (config.input.instruments, whose batches carry
                  'instrument' [B] int32, an index into data.specs.INSTRUMENTS; the model's
                  `num_domains` is len(INSTRUMENTS)) and exports
                  translate(model, variables, rng, audio [B, T] float in [-1, 1], source [B],
                  target [B], temperature=1.0) -> float32 audio [B, T] in [-1, 1], the same
                  music played by the target instruments; experiments/translate.py writes a
                  wav's translation and the `translation` evaluator scores it against the
                  target instrument's rendering of the same score. A translator that cannot
                  draw audio without a source (models/umt) raises ValueError from `generate`;
                  tests: those of its other kind (a flow's inverse and log-det; each decoder's
                  step-vs-parallel), and for adversarial domain confusion, that gradient
                  reversal flips and scales the gradient exactly.

The data facts. `create` fills these Model fields (when the Model has them) from
`config.input`, the one source of each: `sample_rate` and `hop_length` (its dataset),
`encoding` and `num_classes` (2^bits, for coded audio), `num_mels` (input.mel.n_mels, where
the input has 'mel' frames), `local_features`, the width of the
frame features named in the Model's `local_keys` (which must be among
`config.input.frame_features`), and `mel_settings`, the input's log-mel as sorted (key, value)
pairs of data.spectral.log_mel_spectrogram's arguments (where the input has 'mel' frames);
of an events input, only `sample_rate` (input.sample_rate, the rendering's).
For a VQ-VAE level or prior (models/vqvae, models/vqvae_prior), `levels` comes from
`config.levels` (the frozen levels' run configs, experiments/train_vqvae.py): each level's Model
fields as sorted pairs. For a distillation student, `teacher` and `teacher_name` come from
`config.teacher` (the teacher run's whole config, which must read the same dataset and mel):
the teacher Model's keyword arguments as sorted pairs, and its family. A config that sets one of them to another
value fails with a one-line error naming the key.

Shared model code (parameter helpers, sampling from logits, per-stream keys, conditioning
transforms, the prompt/chunk loop of code models, streams over host threads) lives in
models/layers/, and no family keeps a copy.
"""

import dataclasses
import importlib
import pkgutil
import types

import ml_collections

from data import specs


def _is_family(name: str) -> bool:
  module = importlib.import_module(f'{__name__}.{name}')
  return (all(hasattr(module, a) for a in ('Model', 'init', 'loss')) and
          any(hasattr(module, a) for a in ('generate', 'transcribe', 'translate')))


def families() -> list[str]:
  """The names of the model families (packages/modules under models/ that keep the contract)."""
  names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != 'layers')
  return [n for n in names if _is_family(n)]


def family(name: str) -> types.ModuleType:
  """models/<name>; ValueError naming the valid families."""
  names = {m.name for m in pkgutil.iter_modules(__path__)}
  if name in names and name != 'layers' and _is_family(name):
    return importlib.import_module(f'{__name__}.{name}')
  raise ValueError(f'config.model_name={name!r}: expected one of {", ".join(families())}')


def data_facts(config: ml_collections.ConfigDict, local_keys=()) -> dict:
  """The Model fields that `config.input` determines (see the module docstring)."""
  data = config.input
  if specs.is_events(data):  # a model of performance events renders them at this rate
    return {'sample_rate': data.sample_rate}
  d = specs.dataset(data.dataset)
  facts = {'sample_rate': d.sample_rate, 'hop_length': d.hop_length, 'encoding': data.encoding}
  if data.encoding != 'float':
    facts['num_classes'] = 2 ** data.bits
  if 'mel' in data.frame_features:
    facts['mel_settings'] = tuple(sorted(specs.mel_kwargs(data).items()))
    facts['num_mels'] = data.mel.n_mels
  if 'teacher' in config:  # a distillation student: its frozen teacher's Model, from its run
    teacher = config.teacher
    mel = lambda d: specs.mel_kwargs(d) if 'mel' in d.frame_features else None
    if (teacher.input.dataset, mel(teacher.input)) != (data.dataset, mel(data)):
      raise ValueError(f'config.teacher.input (dataset {teacher.input.dataset!r}, mel '
                       f'{mel(teacher.input)}) differs from config.input (dataset '
                       f'{data.dataset!r}, mel {mel(data)}): a student reads its teacher\'s data')
    facts['teacher_name'] = teacher.model_name
    facts['teacher'] = tuple(sorted(model_kwargs(teacher, family(teacher.model_name).Model)
                                    .items()))
  if 'levels' in config:  # a VQ-VAE level or prior: the frozen levels below it, from their runs
    facts['levels'] = levels(config)
  if local_keys:
    missing = [k for k in local_keys if k not in data.frame_features]
    if missing:
      raise ValueError(f'config.model.local_keys={tuple(local_keys)}: {missing} not in '
                       f'config.input.frame_features={tuple(data.frame_features)}')
    facts['local_features'] = specs.frame_width(data, local_keys, 'config.model.local_keys')
  return facts


def levels(config: ml_collections.ConfigDict) -> tuple:
  """The Model fields of each run in `config.levels` ({'level1': run config, ...}, level 1
  first), as sorted (name, value) pairs; each must read the audio that `config.input` reads."""
  out = []
  for i in range(1, len(config.levels) + 1):
    run = config.levels[f'level{i}']
    ours, theirs = ((specs.dataset(c.input.dataset).sample_rate, c.input.encoding, c.input.bits)
                    for c in (config, run))
    if ours != theirs:
      raise ValueError(f'config.levels.level{i}.input (sample rate, encoding, bits) = {theirs}, '
                       f'but config.input gives {ours}: a level above reads the audio of the '
                       'levels below')
    out.append(tuple(sorted(model_kwargs(run, family(run.model_name).Model).items())))
  return tuple(out)


def _hashable(value):
  """Lists as tuples and dicts as sorted (key, value) pairs, recursively: modules must hash."""
  if isinstance(value, (list, tuple)):
    return tuple(_hashable(v) for v in value)
  if isinstance(value, (dict, ml_collections.ConfigDict)):
    return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
  return value


def model_kwargs(config: ml_collections.ConfigDict, model_cls: type) -> dict:
  """config.model with the data facts filled in (lists as tuples and dicts as sorted pairs:
  modules must hash)."""
  fields = {f.name for f in dataclasses.fields(model_cls)}
  kwargs = {k: _hashable(v) for k, v in config.model.items()}
  facts = data_facts(config, kwargs.get('local_keys', ()))
  for name, value in facts.items():
    if name not in fields:
      continue
    given = kwargs.get(name)
    if given is not None and given != value:
      raise ValueError(f'config.model.{name}={given!r}, but config.input (dataset '
                       f'{config.input.dataset!r}, encoding {config.input.encoding!r}, bits '
                       f'{config.input.bits}) gives {value!r}; leave config.model.{name} out '
                       'to derive it')
    kwargs[name] = value
  return kwargs


def create(config: ml_collections.ConfigDict):
  """Model(**config.model) of `config.model_name`, with the data facts of `config.input`.

  Raises:
    ValueError: an unknown family or model key, or a model key that disagrees with the data.
  """
  module = family(config.model_name)
  kwargs = model_kwargs(config, module.Model)
  try:
    return module.Model(**kwargs)
  except TypeError as e:  # an unknown keyword
    raise ValueError(f'config.model for {config.model_name}: {e}') from None
