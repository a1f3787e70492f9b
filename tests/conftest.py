"""Shared fixtures and helpers. JAX sees 8 CPU devices so that tests can build real meshes.

Test modules import helpers from here (`from tests.conftest import ...`), never from each
other. Tests marked `slow` (a real training run, several processes) still run in CI and in
the README's command; iterate with `pytest -m "not slow"`.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# Before anything imports jax.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One compilation cache for the session and the jobs its tests start as subprocesses: tests
# compile the same small programs again and again (a killed run and its resume, the CLI beside
# the library call). Measured on 2 cores: the killed-run test 79 s -> 50 s, the falling-loss
# test 42 s -> 21 s. A fresh directory each session, so nothing outlives it.
_CACHE = tempfile.mkdtemp(prefix='wavegen-jax-cache-')
os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from data import corpus  # pylint: disable=g-import-not-at-top
from data import inputs  # pylint: disable=g-import-not-at-top
from data import maestro  # pylint: disable=g-import-not-at-top
from data import specs  # pylint: disable=g-import-not-at-top
from experiments import sharding  # pylint: disable=g-import-not-at-top
from experiments import state as state_lib  # pylint: disable=g-import-not-at-top
from experiments.configs import common  # pylint: disable=g-import-not-at-top
import models  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small segments keep the fixtures fast: 1 s at 16 kHz, 32 frames of 500 samples.
TEST_CONFIG = maestro.MaestroConfig.make(16000, 16000, 500)
TEST_DATASET = TEST_CONFIG.name  # 'sr16000_seg16000_hop500'


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: a real training run or several processes; '
                          'deselect with -m "not slow" while iterating')


def pytest_unconfigure(config):
  del config
  shutil.rmtree(_CACHE, ignore_errors=True)


def config_path(name: str) -> str:
  """experiments/configs/<name>.py (append ':arg' for a variant)."""
  return os.path.join(ROOT, 'experiments', 'configs', f'{name}.py')


def no_evals(c) -> None:
  """Turns off every periodic evaluator of `c` (unlocked)."""
  for entry in c.evals.values():
    entry.every_steps = 0


def _tiny(spec: str, model: dict, crop_samples: int, total_steps: int, overrides: dict):
  """The runlocal config of `spec` ('name' or 'name:variant') shrunk: `model` updates,
  `crop_samples` crops, no evaluators, logs and checkpoints every 2 steps; then the dotted
  `overrides` (the locked config rejects typos)."""
  name, _, variant = spec.partition(':')
  c = common.load(config_path(name) + f':{variant + "," if variant else ""}runlocal')
  with c.unlocked():
    c.model.update(model)
    c.input.crop_samples = crop_samples
    c.microbatches = 1
    c.total_steps = total_steps
    c.log_every_steps = 2
    no_evals(c)
    c.checkpoint.every_steps = 2
    c.optim.warmup_steps = 2
  c.update_from_flattened_dict(overrides)
  return c


def tiny_wavenet(**overrides):
  """The runlocal WaveNet shrunk to seconds: 4 layers, 8 x 512-sample crops, 6 steps."""
  return _tiny('wavenet', dict(num_layers=4, dilation_cycle=4, residual_channels=16,
                               gate_channels=32, skip_channels=16), 512, 6, overrides)


def tiny_midi_wavenet(**overrides):
  """tiny_wavenet's network conditioned on MIDI frame features (the `midi` variant)."""
  return _tiny('wavenet:midi', dict(num_layers=4, dilation_cycle=4, residual_channels=16,
                                    gate_channels=32, skip_channels=16), 512, 6, overrides)


def tiny_sparse_transformer(**overrides):
  """The runlocal Sparse Transformer shrunk to seconds: 2 layers of 32, context 256 in blocks
  of 16, 4 steps."""
  return _tiny('sparse_transformer', dict(num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64,
                                          max_length=256, block=16), 256, 4, overrides)


def tiny_music_transformer(**overrides):
  """The runlocal Music Transformer shrunk to seconds: 2 layers of 32, windows of 64 events,
  batch 8, 4 steps."""
  c = common.load(config_path('music_transformer') + ':runlocal')
  with c.unlocked():
    c.model.update(num_layers=2, embed_dim=32, num_heads=4, mlp_dim=64, max_length=128,
                   max_distance=32)
    c.input.update(window=64, batch_size=8)
    c.total_steps, c.log_every_steps, c.optim.warmup_steps = 4, 2, 2
    no_evals(c)
    c.checkpoint.every_steps = 2
  c.update_from_flattened_dict(overrides)
  return c


def tiny_onsets_frames(**overrides):
  """The runlocal Onsets and Frames shrunk to seconds: conv 2/2/4, fc 8, BiLSTMs of 4, 8 x
  4,096-sample crops (8 frames), 4 steps."""
  return _tiny('onsets_frames', dict(filters=(2, 2, 4), fc_size=8, lstm_units=4), 4096, 4,
               overrides)


def tiny_samplernn(**overrides):
  """The runlocal SampleRNN shrunk to seconds: tiers of 8 and 2 at width 32, 8 x (8 + 256)-sample
  crops in subsequences of 128, 4 steps."""
  return _tiny('samplernn', dict(dim=32, embed_dim=8, tbptt_samples=128), 264, 4, overrides)


VQVAE_TINY_LEVEL = dict(channels=8, res_blocks=1, codebook_size=16, code_dim=4)
VQVAE_TINY_DECODER = dict(num_layers=3, dilation_cycle=3, residual_channels=8, gate_channels=16,
                          skip_channels=8, local_channels=8)


def tiny_vqvae(variant: str, **overrides):
  """experiments/configs/vqvae.py:<variant>,runlocal shrunk to seconds, 4 steps: levels of 16
  codes of 4 dimensions over width-8 encoders and 3-layer decoders, on crops of 512 x the
  level's input hop; the prior a 1-layer Sparse Transformer over 16 top codes, on crops of
  2,048 samples."""
  if variant.startswith('prior'):
    prior = dict(num_layers=1, embed_dim=16, num_heads=2, mlp_dim=32, max_length=16, block=4,
                 summary=2)
    flat = {f'model.prior_model.{k}': v for k, v in prior.items()}
    return _tiny(f'vqvae:{variant}', {}, 2048, 4, {**flat, **overrides})
  level = int(variant.partition('=')[2])
  flat = {f'model.decoder.{k}': v for k, v in VQVAE_TINY_DECODER.items()}
  return _tiny(f'vqvae:{variant}', VQVAE_TINY_LEVEL, 512 * {1: 1, 2: 8, 3: 32}[level], 4,
               {**flat, **overrides})


def tiny_flow(name: str, **overrides):
  """The runlocal flow vocoder `name` shrunk to seconds: 8 x 1,024-sample crops (2 frames), a
  handful of small flows, 4 steps."""
  model = {'waveglow': dict(num_flows=4, channels=16, num_layers=2),
           'flowavenet': dict(num_blocks=3, flows_per_block=2, split_every=2, channels=16),
           'waveflow': dict(height=4, num_flows=2, channels=8, num_layers=3)}[name]
  return _tiny(name, model, 1024, 4, overrides)


def tiny_gan(name: str, **overrides):
  """The runlocal GAN `name` shrunk to seconds, 4 steps: the vocoders on 8 x 1,024-sample crops
  (2 frames) with a one-channel-wide generator end; the clip models on 16 x 16,384-sample clips
  (the clip is the model's) in 2 critic steps of 8, d = 2."""
  clips = name in ('wavegan', 'specgan')
  model = {'wavegan': dict(dim=2), 'specgan': dict(dim=2),
           'melgan': dict(channels=16, residual_layers=1, discriminator_width=1 / 16),
           'hifigan': dict(channels=16, resblock_kernels=(3,), resblock_dilations=(1, 3),
                           discriminator_width=1 / 16)}[name]
  c = _tiny(name, model, 16384 if clips else 1024, 4, {})
  with c.unlocked():
    c.input.batch_size = 16 if clips else 8
  c.update_from_flattened_dict(overrides)
  return c


def tiny_translator(name: str, **overrides):
  """The runlocal translator `name` shrunk to seconds, 8 x 1,024-sample crops, 4 steps: the
  UMT with a 2-layer encoder of 8 channels, a latent of 4 and 3-layer decoders; Blow with frames
  of 256 samples in 2 blocks of 2 flows of 16 channels."""
  model = {'umt': dict(encoder_blocks=1, encoder_layers=2, encoder_channels=8, latent_dim=4,
                       confusion_channels=8, decoder=dict(
                           num_layers=3, dilation_cycle=3, residual_channels=8,
                           gate_channels=16, skip_channels=8, local_channels=4)),
           'blow': dict(frame_samples=256, num_blocks=2, flows_per_block=2, channels=16,
                        embedding_dim=8)}[name]
  return _tiny(name, model, 1024, 4, overrides)


def train_step_of(c, init_fn=None):
  """(fresh state, jitted train step, batch sharding, mesh) of config `c`; the state from
  `init_fn(c, family, model)` (default train.py's)."""
  from experiments import train  # pylint: disable=g-import-not-at-top
  family, model = models.family(c.model_name), models.create(c)
  mesh, rules = sharding.make_mesh(c.mesh), sharding.rules(c)
  init = (init_fn or train.init_fn)(c, family, model)
  shardings = state_lib.shardings(init, mesh, rules)
  batch_sh = sharding.batch_sharding(mesh, rules)
  step = train.make_train_step(c, family, model, train.make_optimizer(c), rules, shardings,
                               batch_sh)
  return state_lib.create(init, shardings, c.seed), step, batch_sh, mesh


def kill_and_resume(tmp_path, config_spec: str, flags_: list[str], total: int,
                    kill_after: int = 4, trainer: str = 'experiments.train'):
  """Trains `config_spec` with `flags_` (checkpoints every 2 steps, to step `total`) straight
  through in tmp_path/straight, and in tmp_path/killed with a SIGKILL once checkpoint
  `kill_after` exists, then resumed. Returns (both final checkpoints' states, the resume's
  output); asserts the kill came mid-run and the resume started from the last checkpoint."""
  from experiments import checkpoint  # pylint: disable=g-import-not-at-top
  run = lambda workdir, wait=True: run_module(
      trainer, f'--config={config_spec}', f'--workdir={workdir}', *flags_,
      wait=wait)
  code, out = run(tmp_path / 'straight')
  assert code == 0, out
  proc = run(tmp_path / 'killed', wait=False)
  ckpt = tmp_path / 'killed' / 'checkpoints' / str(kill_after)
  deadline = time.time() + 240
  while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'killed' / 'checkpoints') if s.isdigit())
  assert steps and steps[-1] < total, steps  # it died mid-run
  code, out = run(tmp_path / 'killed')
  assert code == 0, out
  assert f'resumed from step {steps[-1]}' in out
  return (checkpoint.load(str(tmp_path / 'straight'))[0],
          checkpoint.load(str(tmp_path / 'killed'))[0], out)


def tiny_on_fixture(maestro_dir: str, data_dir: str, variant: str = 'runlocal'):
  """The runlocal WaveNet, 3 layers deep, on the `maestro_dir` fixture's corpus: 4 steps,
  checkpoints at 2 and 4, whole-segment evaluation."""
  config = common.load(config_path('wavenet') + f':{variant}')
  config.input.dataset = TEST_DATASET
  config.input.manual_dir = maestro_dir
  config.input.data_dir = data_dir
  config.input.crop_samples = 2000  # a multiple of the 500-sample hop
  config.total_steps = 4
  config.log_every_steps = 2
  config.checkpoint.every_steps = 2
  with config.unlocked():
    no_evals(config)
  config.evals.validation.crop_samples = None
  config.model.num_layers = 3  # compile time grows with the layers
  config.microbatches = 1  # 8 rows over 8 faked devices
  return config


def random_batch(config, rows: int = 8) -> dict:
  """A random training batch of `config`'s kind: 8 x 512 codes, or float audio of its crops
  (x 0.1) with random log-mel frames and MIDI labels where it reads them, or windows of events;
  with random instruments where the input has them."""
  rng = np.random.default_rng(0)
  if specs.is_events(config.input):  # events, the last rows ending early
    lengths = np.linspace(config.input.window, config.input.window // 2, rows).astype(int)
    return {'events': rng.integers(0, 388, (rows, config.input.window)).astype(np.int32),
            'event_mask': np.arange(config.input.window) < lengths[:, None]}
  ids = ({'instrument': rng.integers(0, len(specs.INSTRUMENTS), rows).astype(np.int32)}
         if config.input.get('instruments') else {})  # a translator's instruments
  if config.input.encoding != 'float':
    return {'audio': rng.integers(0, 256, (rows, 512)).astype(np.int32), **ids}
  t = config.input.crop_samples
  batch = {'audio': (rng.standard_normal((rows, t)) * 0.1).astype(np.float32)}
  frames = t // specs.dataset(config.input.dataset).hop_length
  if 'mel' in config.input.frame_features:
    batch['mel'] = rng.uniform(-8., 0., (rows, frames, config.input.mel.n_mels)).astype(
        np.float32)
  if 'pianoroll' in config.input.frame_features:  # a transcriber's labels
    onsets = rng.random((rows, frames, specs.NUM_KEYS)) < 0.05
    batch.update(onsets=onsets, pianoroll=onsets | (rng.random(onsets.shape) < 0.1),
                 velocities=rng.integers(0, 128, onsets.shape).astype(np.uint8))
  return {**batch, **ids}


def loss_and_grads(config, devices):
  """(loss, host gradients, state shardings) of the family's loss (its model state included:
  ActNorm's start, a distillation's teacher) on `random_batch(config)` over `config.mesh` on
  `devices`, jitted with the state's shardings."""
  family, model = models.family(config.model_name), models.create(config)
  mesh = sharding.make_mesh(config.mesh, devices=devices)
  rules = sharding.rules(config)
  init = state_lib.train_init(family, model, optax.sgd(0.),
                              specs.zeros_batch(config.input, 1))
  shardings = state_lib.shardings(init, mesh, rules)
  state = state_lib.create(init, shardings, config.seed)
  batch = jax.device_put(random_batch(config), sharding.batch_sharding(mesh, rules))

  def f(params, model_state, batch):
    with nn.logical_axis_rules(rules):
      return jax.value_and_grad(lambda p: family.loss(
          model, {'params': p, **model_state}, batch, jax.random.key(0))[0])(params)

  with jax.set_mesh(mesh):
    loss, grads = jax.jit(f, in_shardings=(shardings['params'], shardings.get('model_state', {}),
                                           None))(state['params'],
                                                  state.get('model_state', {}), batch)
  return float(loss), jax.device_get(grads), shardings


def assert_sharded_loss_equals_one_device(config_of) -> None:
  """The loss and gradients of `config_of(mesh)` (a config for a mesh dict) over 8 faked data
  devices equal those on one device."""
  assert jax.device_count() == 8
  loss8, grads8, _ = loss_and_grads(config_of({'data': 8, 'model': 1}), jax.devices())
  loss1, grads1, _ = loss_and_grads(config_of({'data': 1, 'model': 1}), jax.devices()[:1])
  assert abs(loss8 - loss1) < 1e-5 * abs(loss1)
  for g8, g1 in zip(jax.tree.leaves(grads8), jax.tree.leaves(grads1)):
    np.testing.assert_allclose(g8, g1, atol=2e-5, rtol=1e-4)


def metric_over_steps(config, state, step, batch_sh, mesh, key: str, steps: int) -> list:
  """metrics[`key`] of `steps` training steps from `state` on `config`'s batches (all finite)."""
  batches = inputs.make_batches(config.input, sharding=batch_sh)
  out = []
  with jax.set_mesh(mesh):
    for _ in range(steps):
      state, metrics = step(state, next(batches))
      out.append(float(metrics[key]))
  assert np.all(np.isfinite(out)), out
  return out


def run_module(module: str, *args, env=None, timeout=300, wait=True):
  """`python -m <module> args` from the repository root; (returncode, stdout + stderr), or the
  Popen when not `wait`."""
  proc = subprocess.Popen([sys.executable, '-m', module, *args], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env)
  if not wait:
    return proc
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def bad_midi(d: str, row: dict) -> tuple[str, str]:
  """Overwrites the MIDI file of CSV `row` in MAESTRO directory `d` with bytes that do not
  parse; (the file's name, the words its error must hold)."""
  with open(os.path.join(d, row['midi_filename']), 'wb') as f:
    f.write(b'MThd\x00\x00\x00\x06not a midi file at all')
  return row['midi_filename'], 'does not parse'


def missing_midi(d: str, row: dict) -> tuple[str, str]:
  """Removes the MIDI file of CSV `row`; (its name, the words its error must hold)."""
  os.remove(os.path.join(d, row['midi_filename']))
  return row['midi_filename'], 'missing'


@pytest.fixture(scope='session')
def maestro_dir(tmp_path_factory):
  """A MAESTRO-v3-format directory: 4 pieces (2 train, 1 validation, 1 test) of at most 4 s,
  stereo 16-bit at 44.1 and 48 kHz alternately, with sustain pedal."""
  out = tmp_path_factory.mktemp('maestro') / 'maestro-v3.0.0'
  corpus.write_corpus(out, num_pieces=4, max_seconds=4.0, sample_rate=(44100, 48000),
                      source='procedural', num_workers=1)
  return str(out)


@pytest.fixture(scope='session')
def instruments_dir(tmp_path_factory):
  """A multi-instrument directory (data/instruments.py): 4 procedural scores of at most 3 s
  (2 train, 1 validation, 1 test), each played by every instrument, 16-bit stereo at 16 kHz."""
  out = tmp_path_factory.mktemp('instruments') / 'maestro-v3.0.0'
  corpus.write_corpus(out, num_pieces=4, max_seconds=3.0, sample_rate=16000,
                      source='procedural', instruments=specs.INSTRUMENTS, num_workers=1)
  return str(out)


@pytest.fixture(scope='session')
def built(maestro_dir, tmp_path_factory):
  """The Maestro builder, prepared from `maestro_dir` with TEST_CONFIG."""
  return maestro.prepare(TEST_CONFIG, manual_dir=maestro_dir,
                         data_dir=str(tmp_path_factory.mktemp('tfds')))
