"""The Sparse Transformer (Child et al. 2019) over raw audio codes, with a KV-cache sampler.

    codes [B, T] --embedding--> x [B, T, E]
      --N x (x += SparseAttention(LN(x)); x += MLP_gelu(LN(x)))--> LN --> logits [B, T, Q]

Position t of the output sees codes[:, :t + 1] and predicts codes[:, t + 1] (the trainer
compares `logits[:, :-1]` with `codes[:, 1:]`). Pre-norm decoder-only transformer: every
residual branch starts with a LayerNorm, and the projections that write into the residual
stream (attention output, second MLP matrix) are initialised scaled by 1/sqrt(2N) (the paper's
deep-network init). LayerNorms, softmax, logits and the loss are float32; with
`dtype='bfloat16'` the residual stream, matmuls and the k/v caches are bfloat16 while the
parameters stay `param_dtype`.

Positions (`positions`): 'rope' (default), rotary embeddings (Su et al. 2021) on queries and
keys, so that attention scores depend on positions only through i - j: a waveform's statistics
do not depend on where a window starts, and the heads that must find "the previous sample" or
"one period back" learn one offset instead of one per position. On the runlocal setting it
reached 3.31 bits/sample where the paper's embeddings reached 4.04, at the same cost and with
no position parameters. 'factorized' is the paper's: learned embeddings over the 2-D layout
i = r l + c of a window (l = `block`), emb_row[r] + emb_col[c], (L / l + l) E parameters.

Attention (models/attention.py), `attention` x `combine`:
  * 'strided' (default): pattern A 'local' (the last l positions), B 'strided' (every l-th
    position back); the paper's choice for data with periodic structure (images, audio), and
    the pattern of its 152 M classical-music model. 'fixed': 'block' and 'summary' (c =
    `summary` positions at the end of each block), the paper's choice for text. 'dense': full
    causal attention (baseline).
  * 'heads' (default): in every layer half the heads attend with A and half with B (the
    paper's multi-head option); 'interleave': layers alternate A and B; 'merged': every head
    attends over A | B in one softmax. With 'heads' or 'interleave' any two consecutive
    layers connect every j <= i; 'heads' learnt fastest at the same cost on runlocal (3.16
    bits/sample, interleave 3.31, merged 3.33 at equal wall time: its layers cost 1.5x).
With l ~ sqrt(L) each layer costs O(L sqrt L). `remat` recomputes each block in the backward
pass (jax.checkpoint), which is what makes 65,536-sample contexts fit.

Inputs longer than `max_length` = L: overlapping windows of L samples starting every L/2, each
computed from its own position 0 with no memory of the samples before it (as if preceded by
silence, the evaluation's convention for segments); position t is computed in the window of
`window_start(t)`: [0, L) for t < L, later the latest window in which t has at least L/2
positions of context. The evaluation of whole 65,536-sample segments by a short-context model
therefore costs about twice a single pass, and every output beyond the first L/2 positions
sees at least L/2 samples. `receptive_field` = L.

The sampler (`init_cache`, `prefill`, `step`, `sample_codes`) keeps each layer's keys and values
of the current window, [B, L, H, D], and gathers O(l + L / l) of them per step through
`attention.attend_step`. A prompt is prefilled in one parallel pass; past L positions the
window slides by L/2 (its last L/2 codes re-prefilled in one pass), which reproduces the
parallel forward's windows exactly, so generation has no length limit. `naive_generate`
recomputes the window's forward pass at every step: the reference for tests.

The family contract (models/__init__.py): `init`, `loss` (teacher-forced NLL in nats per
sample, with bits per sample) and `generate` (float audio chunks) below, on the shared code
machinery of models/layers/autoregressive.py. The model is unconditional.
"""

from models.layers import autoregressive
from models.sparse_transformer.model import ATTENTIONS
from models.sparse_transformer.model import COMBINES
from models.sparse_transformer.model import hidden
from models.sparse_transformer.model import logits
from models.sparse_transformer.model import Model
from models.sparse_transformer.model import nll
from models.sparse_transformer.model import sample_logits
from models.sparse_transformer.model import unboxed_params
from models.sparse_transformer.model import window_start
from models.sparse_transformer.model import windowed
from models.sparse_transformer.sampler import init_cache
from models.sparse_transformer.sampler import naive_generate
from models.sparse_transformer.sampler import prefill
from models.sparse_transformer.sampler import sample_codes
from models.sparse_transformer.sampler import shift
from models.sparse_transformer.sampler import step

init = autoregressive.init


def loss(model: Model, variables: dict, batch: dict, rng=None):
  """(mean NLL in nats per predicted sample, metrics, {}): see layers/autoregressive.loss."""
  del rng  # deterministic
  return autoregressive.loss(model, variables, batch, nll)


def generate(model: Model, variables: dict, rng, num_samples: int, **kwargs):
  """Float audio chunks [B, <= chunk_samples] (the contract's `generate`): `sample_codes`
  decoded, with a float prompt (layers/autoregressive.generate)."""
  return autoregressive.generate(sample_codes, model, variables, rng, num_samples, **kwargs)
