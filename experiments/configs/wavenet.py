r"""WaveNet on MAESTRO (16 kHz, 8-bit mu-law), unconditional or MIDI-conditioned.

Variants (combine with commas, e.g. `:midi,runlocal`):

  (none)    unconditional MAESTRO model: 40 layers in 4 cycles of dilations 1..512 (receptive
            field 4,094 samples, 256 ms at 16 kHz), 128 residual / 256 gate / 256 skip
            channels, batch 32 x 8,192 samples, 4.8 M parameters. Why this size: the paper's
            music models had a receptive field of a few hundred milliseconds, which at 16 kHz
            needs a fourth dilation cycle; twice the width of the 30-layer, 64-channel models
            that public implementations train, so that the model is limited by data and
            receptive field rather than capacity, while a step stays within one accelerator.
  midi      the Wave2Midi2Wave synthesiser setting: the same network conditioned on the
            pianoroll, onsets and velocities of the aligned MIDI (88 keys each, 31.25 frames/s),
            held for the 512 samples of each frame.
  mel       the Tacotron 2 vocoder: conditioned on 80-band log-mel frames (data/specs.py,
            `mel_config`) of 24 kHz audio at a 300-sample (12.5 ms) hop, 1,200-sample (50 ms)
            windows, 125 Hz - 7.6 kHz, log floor 0.01; 30 layers in 3 cycles, a 10-component
            mixture of logistics over 16-bit linear audio; each frame projected per layer and
            held for its 300 samples. Evaluated by the `spectral` evaluator against Griffin-Lim
            on the same mel (`python -m experiments.resynthesize` vocodes a wav).
  peer      the setting public WaveNets are benchmarked in: 30 layers in 3 cycles of 1..512,
            64 residual / 128 gate / 64 skip channels, kernel 2, 256-way softmax,
            batch 4 x 8,000 samples, unconditional.
  teacher=mixture|gaussian  (with `mel`) a distillation teacher: the mel vocoder with a
            10-component logistic mixture (Parallel WaveNet's teacher) or a single Gaussian
            (ClariNet's) over 16-bit linear audio, also at `runlocal` (whose `mel` alone is an
            8-bit softmax); students: experiments/configs/parallel_wavenet.py, clarinet.py.
  bf16      bfloat16 compute (activations and matmuls), with float32 parameters, gradients
            and optimizer state, and float32 logits, softmax and loss.
  runlocal  a laptop run on the embedded corpus (2 CPU cores): 10 layers (receptive field
            1,025 samples), 32/64/64 channels, batch 8 x 2,048 samples in 8 microbatches,
            1,200 steps (about 2.5 minutes on 2 cores). With `mel`: the corpus's 16 kHz and
            512-sample hop, 80 mels over 0-8 kHz from 2,048-sample windows (log floor 0.01
            as above), 8-bit mu-law softmax output.

Train, then sample:

  python -m experiments.train --config=experiments/configs/wavenet.py:runlocal --workdir=/tmp/wn
  python -m experiments.sample --workdir=/tmp/wn --num_samples=1 --seconds=2 --out=/tmp/wn/wav

Expected (runlocal, 2-core CPU, about 3 minutes): 3.3 bits per sample on the whole validation
split and 3.5 on test, against mu-law marginal entropies of 7.5 bits
(`python -m experiments.evaluate --workdir=/tmp/wn --split=validation`).

Expected speed (2-core Intel Xeon, AVX-512, `python -m experiments.benchmark --what=train|sampler
--config=...`), with the CPU kernels (models/wavenet/kernel.py): peer, training 40,600 audio
samples/s (57% of the matmul peak; the pure-JAX layers 24,300; the PyTorch reference measured
beside it: 24,800), the cached sampler 26,600 samples/s for one stream (1.7x real time at
16 kHz) and 111,000 for 16 streams in all (the pure-JAX step: 9,800 and 46,300); the
paper-size model, training 8,400 samples/s in 16 microbatches (83% of the peak; the whole batch
at once needs 40 GB) and sampling 1,460 samples/s for one stream, 18,200 for 16. README's
WaveNet table has the commands.

Expected (mel,runlocal, about 6 minutes with its evaluations): 3.1 bits per sample on
validation; on the first 4 x 1 s of validation (`--eval=resynthesis`) log-mel L1 1.1, MR-STFT
3.6, magnitude SNR -0.8 dB, against Griffin-Lim's 0.07, 3.1 and 4.7 dB on the same mels: at
this size and training time the vocoder does not beat Griffin-Lim.

Expected (mel,teacher=mixture,runlocal / mel,teacher=gaussian,runlocal, about 15 minutes
each): 9.9 / 9.6 bits per 16-bit sample on validation; vocoded (as above) 2.05 / 0.97 log-mel
L1, 5.5 / 3.7 MR-STFT, -3.4 / -0.7 dB magnitude SNR.
"""

from experiments.configs import common

TEACHERS = ('mixture', 'gaussian')  # the distillation teachers' outputs


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False, midi=False, mel=False, peer=False, bf16=False,
                         teacher='')
  if arg.midi and arg.mel:
    raise ValueError('config arguments midi and mel: choose one conditioning')
  if arg.teacher and (arg.teacher not in TEACHERS or not arg.mel):
    raise ValueError(f'config argument teacher={arg.teacher!r}: expected one of '
                     f'{", ".join(TEACHERS)}, with mel')
  c = common.base_config()
  c.model_name = 'wavenet'
  # num_classes (2^input.bits), hop_length and local_features come from c.input.
  c.model = dict(residual_channels=128, gate_channels=256, skip_channels=256, kernel_size=2,
                 num_layers=40, dilation_cycle=10, output='softmax', num_mixtures=10,
                 num_global=0, global_key=None, global_channels=16, local_keys=(),
                 local_channels=64, dtype='float32', param_dtype='float32')
  c.input.dataset = '16k'
  c.input.encoding = 'mu_law'
  c.input.bits = 8
  c.input.batch_size = 32
  c.input.crop_samples = 8192  # a multiple of the 512-sample hop, for the MIDI variant
  c.total_steps = 200_000
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 2000

  if arg.peer:
    c.model.update(residual_channels=64, gate_channels=128, skip_channels=64, num_layers=30)
    c.input.batch_size = 4
    c.input.crop_samples = 8000
    c.microbatches = 4  # CPU: 1.3x the throughput of whole batches (set 1 on accelerators)

  if arg.midi:
    c.input.frame_features = ('pianoroll', 'onsets', 'velocities')
    c.model.local_keys = c.input.frame_features  # held for the dataset's hop

  if arg.mel:
    c.input.dataset = 'sr24000_seg96000_hop300'
    c.input.encoding = 'linear'
    c.input.bits = 16
    c.input.crop_samples = 9600  # 32 frames
    c.input.frame_features = ('mel',)
    c.input.mel.update(n_fft=2048, win_length=1200, n_mels=80, fmin=125., fmax=7600.,
                       floor=0.01)
    c.model.local_keys = ('mel',)
    c.model.update(num_layers=30, output='mixture', num_mixtures=10)
    c.evals.resynthesis = common.spectral_eval()

  if arg.bf16:
    c.model.dtype = 'bfloat16'  # compute; parameters and optimizer state stay float32

  if arg.runlocal:
    common.runlocal(c, total_steps=1200, learning_rate=3e-3, evals_every=400, log_every=100,
                    microbatches=8)  # 8: 1.9x the throughput of whole batches on 2 cores
    c.model.update(residual_channels=32, gate_channels=64, skip_channels=64, num_layers=10)
    if arg.mel:
      if not arg.teacher:
        c.input.update(encoding='mu_law', bits=8)
        c.model.output = 'softmax'
      c.input.mel.update(n_fft=2048, win_length=None, n_mels=80, fmin=0., fmax=None)
      c.evals.resynthesis.update(every_steps=c.total_steps, clips=4, seconds=1.0)
  if arg.teacher:
    c.model.output = arg.teacher
  return c


def sweep() -> list[dict]:
  """Learning rate x width, for `python launch/sweep.py CONFIG=...wavenet.py:runlocal ...`."""
  return [{'optim.learning_rate': lr, 'model.residual_channels': r}
          for lr in (1e-3, 3e-3) for r in (32, 64)]
