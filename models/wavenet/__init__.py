"""WaveNet (van den Oord et al. 2016) with a cached autoregressive sampler.

    codes [B, T] --causal input conv (kernel k over one-hot codes, or over the scaled value)-->
    x [B, T, R] --L x (dilated causal conv -> tanh * sigmoid -> residual 1x1, skip 1x1)-->
    relu(sum of skips) -> 1x1 -> relu -> 1x1 -> logits [B, T, Q] (softmax) or [B, T, 3M] (mixture)

Position t of the output sees codes[:, :t + 1] and predicts codes[:, t + 1]: the loss compares
`logits[:, :-1]` with `codes[:, 1:]`. Before the first sample every layer sees zeros (causal
zero padding), which is also the sampler's initial state. Dilations run 1, 2, ..., 2^(c-1) for
c = `dilation_cycle`, repeated; the receptive field is `Model.receptive_field` samples.

Outputs: 'softmax' over `num_classes` codes (8-bit mu-law in the paper); 'mixture', a
discretised mixture of `num_mixtures` logistics over `num_classes` levels evenly spaced in
[-1, 1] (PixelCNN++, Parallel WaveNet's teacher); or 'gaussian', one discretised Gaussian over
the same levels (ClariNet's teacher). The continuous outputs' input is the scaled code value
(or float audio, which a distillation teacher scores), their log scales floored at -7.

Conditioning, added to every layer's gate pre-activation:
  * global: `num_global` ids ([B] int32, e.g. composer or instrument) through an embedding;
  * local: frame features [B, F, D] (MIDI pianoroll/onsets/velocities, or mel frames) through a
    width-3 convolution over frames, held for `hop_length` samples. The output at t (which
    predicts sample t + 1) uses frame (t + 1) // hop_length, the frame of its target, clamped to
    the last frame.

The sampler (`init_cache`, `step`, `sample_codes`) keeps for each layer a ring buffer of its last
(k - 1) x dilation inputs (Fast WaveNet, Paine et al. 2016), so a step costs one column of the
network rather than the receptive field; `naive_generate` recomputes the receptive field and
serves as the reference for tests and benchmarks. Both are pure functions of the parameters.
On the CPU the cached sampler's step runs, by default, as one call of a compiled kernel
(kernel.py, step_kernel.cc: the layers and the head, ~2x faster for 8+ streams), and so do the
residual layers of a float32 model's forward and backward in training and evaluation
(stack_kernel.cc, a custom_vjp; `Model.kernel`), unless a mesh of several devices shards them.
The pure-JAX paths stay the reference and the path on GPU and TPU, and where the kernels are
not built.

The family contract (models/__init__.py): `init`, `loss` (teacher-forced NLL in nats per
sample, with bits per sample) and `generate` (float audio chunks) below, on the shared code
machinery of models/layers/autoregressive.py. Conditioning comes from the batch keys
`model.local_keys` (frame features) and `model.global_key` (ids).
"""

from models.layers import autoregressive
from models.wavenet import kernel  # the CPU kernels (benchmark.py reports their paths)
from models.wavenet.model import OUTPUTS
from models.wavenet.model import Model
from models.wavenet.model import condition
from models.wavenet.model import gaussian_params
from models.wavenet.model import layer_conditioning
from models.wavenet.model import mixture_params
from models.wavenet.model import draws
from models.wavenet.model import nll
from models.wavenet.model import sample_from_draws
from models.wavenet.model import sample_output
from models.wavenet.model import stem
from models.wavenet.model import unboxed_params
from models.wavenet.model import value
from models.wavenet.sampler import init_cache
from models.wavenet.sampler import naive_generate
from models.wavenet.sampler import sample_codes
from models.wavenet.sampler import sampler_weights
from models.wavenet.sampler import step

init = autoregressive.init


def loss(model: Model, variables: dict, batch: dict, rng=None):
  """(mean NLL in nats per predicted sample, metrics, {}): see layers/autoregressive.loss."""
  del rng  # deterministic
  return autoregressive.loss(model, variables, batch, nll)


def generate(model: Model, variables: dict, rng, num_samples: int, **kwargs):
  """Float audio chunks [B, <= chunk_samples] (the contract's `generate`): `sample_codes`
  decoded, with a float prompt and a conditioning dict of batch keys
  (layers/autoregressive.generate)."""
  return autoregressive.generate(sample_codes, model, variables, rng, num_samples, **kwargs)
