r"""Blow (Serrà, Pascual & Segura 2019): a single-scale hyperconditioned flow, trained by maximum
likelihood on frames of every instrument, that translates audio between instruments
(models/blow.py).

Variants:

  (none)    the paper's network on the multi-instrument dataset at 16 kHz
            (input.instruments, data/instruments.py; the 5 instruments of
            data.specs.INSTRUMENTS are its speakers): frames of 4,096 samples (the crop);
            8 blocks of squeeze x 2 then 12 flows of an LU 1x1 convolution, ActNorm and an
            affine coupling whose network is a width-3 convolution with weights and bias
            generated from a 128-dimensional instrument embedding, ReLU, a 1x1 convolution of
            512 channels, ReLU and a zero-initialised width-3 convolution to the scale
            (sigmoid(h + 2)) and the shift. Batch 114 x 4,096 samples, Adam at a constant
            1e-4, 500,000 steps (ours: the paper stops early on validation). 62.10 M
            parameters (62,099,968; the published code's layers give the same count).
  runlocal  a laptop run on the embedded multi-instrument corpus (2 CPU cores): frames of
            2,048 samples, 4 blocks x 3 flows, couplings of 64 channels, the 128-dimensional
            embedding; batch 8 x 2,048 samples (the shared runlocal batch), 3,000 steps at
            5e-4 (1e-3 ended worse: 10.62 bits at step 3,000, and its translations overflowed);
            validation on 4 batches of 8 crops of 8,192 samples every 1,000 steps, the
            translation figures at the end. 0.47 M parameters (466,528); ~67 ms a step.

What is taken from the paper and its published code, and what is not: the architecture above
(the order inside a flow, mixing before ActNorm, the grouped hyperconvolution and the LU 1x1
convolutions are the published code's), the Gaussian prior, Adam at 1e-4 and the batch of 114
frames. Of its augmentation only the random polarity flip is kept (model.flip, in the loss);
its random gain, random pre-emphasis (and the optional noise and compression) are left out,
since the likelihood evaluator calls the same loss. Its learning-rate annealing on a
validation plateau (x 0.2, patience 10 epochs, 2 restarts) is replaced by a constant rate; its
frame-energy filter of silent training frames is not applied. The likelihood is on 16-bit
audio with uniform dequantisation (models/layers/flow_vocoder.py's convention; the published
code has none). Conversion is the paper's: frames at a hop of half a frame, Hann windows,
overlap-add, z used as is (temperature 1).

Train, evaluate, translate a wav:

  python -m experiments.train --config=experiments/configs/blow.py:runlocal --workdir=/tmp/blow
  python -m experiments.evaluate --workdir=/tmp/blow --split=validation
  python -m experiments.translate --workdir=/tmp/blow --audio=piece.wav --to=harpsichord \
      --out=/tmp/blow/harpsichord.wav

Expected (runlocal, measured on a shared 2-core CPU: 9 minutes in all, of which 8 training at
~6 steps/s; ~67 ms a step on 2 idle cores): validation bits per 16-bit sample 10.67, 10.37 and
10.22 at steps 1,000, 2,000 and 3,000 (training 12.4 at step 100); translation figures at the
end, as means over the 20 pairs of different instruments: log-mel L1 2.34, MR-STFT 4.04,
target accuracy 0.30 (chance 0.2): a model this small and short does not yet translate, while
each instrument's own reconstruction is exact (log-mel L1 0.00).
"""

import ml_collections

from data import specs
from experiments.configs import common


def translation_eval(every_steps: int, split: str = 'test', seconds: float = 2.0,
                     scores: int | None = None) -> ml_collections.ConfigDict:
  """The translation figures against paired renderings (experiments/evaluators/translation.py)."""
  return ml_collections.ConfigDict({
      'type': 'translation', 'every_steps': every_steps, 'split': split, 'seconds': seconds,
      'scores': ml_collections.config_dict.placeholder(int) if scores is None else scores,
      'batch_size': 16, 'temperature': 1.0, 'classifier_steps': 500,
      'transcriber': ml_collections.config_dict.placeholder(str)})


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.model_name = 'blow'
  # sample_rate and encoding come from c.input.
  c.model = dict(num_domains=len(specs.INSTRUMENTS), frame_samples=4096, num_blocks=8,
                 flows_per_block=12, channels=512, embedding_dim=128, kernel_size=3, lu=True,
                 flip=True, dtype='float32', param_dtype='float32')
  c.input.instruments = True
  c.input.encoding = 'float'
  c.input.bits = 16
  c.input.crop_samples = 4096
  c.input.batch_size = 114
  c.total_steps = 500_000
  c.optim.learning_rate = 1e-4
  c.optim.decay = 'constant'
  c.optim.warmup_steps = 1000
  c.evals.translation = translation_eval(every_steps=50_000)
  if arg.runlocal:
    common.runlocal(c, total_steps=3000, learning_rate=5e-4, evals_every=1000, log_every=100,
                    microbatches=1)
    c.model.update(frame_samples=2048, num_blocks=4, flows_per_block=3, channels=64)
    c.evals.translation.update(every_steps=c.total_steps, seconds=1.0)
  return c
