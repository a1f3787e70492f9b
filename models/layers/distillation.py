"""Probability density distillation: an inverse autoregressive flow (IAF) student trained to
match a frozen autoregressive WaveNet teacher (Parallel WaveNet, van den Oord et al. 2018;
ClariNet, Ping et al. 2019). models/parallel_wavenet.py and models/clarinet.py are its Models.

The student. Noise z0 [B, T] (standard logistic for Parallel WaveNet, standard normal for
ClariNet) passes through K flows; flow k is a causal WaveNet-like network (layers/flows.py `WN`,
`causal`) of z_{k-1} delayed by one step and the upsampled mel, emitting a shift mu_k and a
log scale s_k per step:

    z_k = z_{k-1} exp(s_k) + mu_k,        x = z_K

Each flow is affine in its input with coefficients from strictly earlier steps, so x_t given
z0_{<t} is z0_t exp(S_t) + M_t: the student's distribution at step t is a logistic (a
Gaussian) of location M_t and log scale S_t = sum_k s_k, with M = mu_K + exp(s_K) (mu_{K-1}
+ ...). Sampling is one parallel pass (`inverse`); the density of given audio needs z0 back,
step by step (`forward`, T passes: tests and tiny inputs only).

The loss (nats per sample, steps 1..T-1 of each crop: the teacher, position t predicting t + 1,
has no prediction for step 0). The teacher scores the student's sample x in one parallel pass
(its input is float audio, so the gradient flows through the teacher into x), giving p_t(.) for
every step:

  Parallel WaveNet  KL(q_t || p_t) = H(q_t, p_t) - H(q_t), the cross-entropy estimated from
                    `kl_samples` fresh draws x'_t ~ q_t per step (reparameterised) scored by
                    p_t, the teacher's mixture of logistics as a continuous density; H(q_t) =
                    S_t + 2 exactly. Plus `power_loss` x the squared distance of the log average
                    power per frequency band (the power spectrum averaged over frames) of x and
                    of the real audio, which keeps the student from whispering. The paper
                    squares raw powers; their logs weigh quiet bands as much as loud ones and
                    need no rescaling with the level.
  ClariNet          KL(q_t || p_t) between two Gaussians in closed form, plus `log_scale_reg`
                    x (S_t - log sigma_t)^2 (the paper's lambda = 4), plus `stft_loss` x the
                    multi-resolution STFT loss of x against the real audio.

The frozen teacher is a WaveNet (models/wavenet) on 16-bit linear codes with a 'mixture' or
'gaussian' output, conditioned on the same mel: its Model is built from the student's `teacher`
field (its Model's keyword arguments as sorted pairs, which `models.create` derives from
`config.teacher`, the teacher run's config) and its parameters are the model state collection
'teacher' (experiments/train_distill.py loads them from the teacher's workdir). Its levels
value(c) = 2c / (2^16 - 1) - 1 sit where the student's float audio puts the code c, so the
teacher's input is the student's x itself.

Metrics: 'kl', 'cross_entropy' and 'entropy' (the student's differential entropy, nats per
sample), each auxiliary loss, and the teacher's NLL in bits per 16-bit sample of the student's
sample (quantised; the teacher's context is the unquantised sample, within half a 16-bit step)
and of the real audio ('teacher_bits_student', 'teacher_bits_data').

The flow vocoders' `generate`, `forward` and `inverse` (layers/flow_vocoder.py) serve the
students unchanged: z0 is drawn per frame from stream keys (`latent_noise`: logistic or
normal, times the temperature) and rendered in windows with the flows' whole reach of context,
each stream alone, so long inputs have no seams.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from data import spectral
import models
from models import wavenet
from models.layers import conditioning
from models.layers import flow_vocoder
from models.layers import flows

DISTRIBUTIONS = ('logistic', 'gaussian')
LOG_2PI = math.log(2 * math.pi)
ENTROPY = {'logistic': 2., 'gaussian': 0.5 * (1. + LOG_2PI)}  # of the standard distribution
TEACHER_OUTPUT = {'logistic': 'mixture', 'gaussian': 'gaussian'}  # the teacher each student fits
POWER_FFT = 1024  # the power loss's STFT (hop n_fft / 4)


class Student(flow_vocoder.MelFlow):
  """An IAF student; `Model(**config.model)`, the data facts and `teacher` derived."""
  distribution: str = 'logistic'
  flow_layers: tuple[int, ...] = (10, 10, 10, 30)  # layers of each flow's network
  channels: int = 64
  kernel_size: int = 3
  dilation_cycle: int = 10
  teacher: tuple = ()  # the teacher Model's keyword arguments as sorted pairs (derived)
  teacher_name: str = 'wavenet'
  kl_samples: int = 4  # draws per step of the logistic cross-entropy estimate
  power_loss: float = 0.
  stft_loss: float = 0.
  log_scale_reg: float = 0.

  def __post_init__(self):
    if self.distribution not in DISTRIBUTIONS:
      raise ValueError(f'model.distribution={self.distribution!r}: expected one of '
                       f'{", ".join(DISTRIBUTIONS)}')
    if not self.flow_layers or min(self.flow_layers) < 1:
      raise ValueError(f'model.flow_layers={self.flow_layers}: expected one or more flows of '
                       '>= 1 layers')
    if self.kl_samples < 1:
      raise ValueError(f'model.kl_samples={self.kl_samples}: expected >= 1')
    super().__post_init__()

  @property
  def granularity(self) -> int:
    return 1

  @property
  def latent_noise(self) -> str:
    return 'logistic' if self.distribution == 'logistic' else 'normal'

  @property
  def reach_samples(self) -> int:
    """Samples of noise before a step that x at that step depends on: each flow's network
    reach, (k - 1) x its dilations' sum, plus its one-step delay."""
    cycle, k = self.dilation_cycle, self.kernel_size
    return sum(1 + (k - 1) * sum(2 ** (i % cycle) for i in range(n)) for n in self.flow_layers)

  def setup(self):
    self.upsampler = flows.Upsampler(self.strides, self.param_dtype)
    self.nets = [flows.WN(2, self.channels, n, self.kernel_size, self.dtype, self.param_dtype,
                          causal=True, dilation_cycle=self.dilation_cycle)
                 for n in self.flow_layers]

  def flow(self, z0: jax.Array, mel: jax.Array):
    """Noise z0 [B, T] -> (x, M, S) [B, T]: the sample and its per-step location and log scale
    (module docstring)."""
    c = self.per_sample(mel, self.upsampler, z0.shape[1])
    z, loc, log_s = z0.astype(jnp.float32), 0., 0.
    for net in self.nets:
      out = net(flows.shift(z, 1)[..., None], c)
      mu, s = out[..., 0], out[..., 1]
      z = z * jnp.exp(s) + mu
      loc, log_s = loc * jnp.exp(s) + mu, log_s + s
    return z, loc, log_s

  def inverse(self, z0: jax.Array, mel: jax.Array) -> jax.Array:
    """The flow contract's inverse: noise -> audio, one parallel pass."""
    return self.flow(z0, mel)[0]

  def forward(self, x: jax.Array, mel: jax.Array):
    """The flow contract's forward: audio -> (z0, log |det dz0/dx|), recovering z0 one step
    at a time (T passes)."""
    def body(t, z0):
      _, loc, log_s = self.flow(z0, mel)
      return z0.at[:, t].set((x[:, t] - loc[:, t]) * jnp.exp(-log_s[:, t]))
    z0 = jnp.zeros_like(x, jnp.float32)
    for t in range(x.shape[1]):  # unrolled: a module method cannot carry its scope in a loop
      z0 = body(t, z0)
    return z0, -jnp.sum(self.flow(z0, mel)[2], axis=1)


# ------------------------------------------------------------------------------------------------
# The distributions.


def log_density(distribution: str, x: jax.Array, loc: jax.Array, log_s: jax.Array):
  """log q(x) of a logistic or Gaussian of location `loc` and log scale `log_s`."""
  u = (x - loc) * jnp.exp(-log_s)
  if distribution == 'logistic':
    return -u - log_s - 2. * jax.nn.softplus(-u)
  return -0.5 * jnp.square(u) - log_s - 0.5 * LOG_2PI


def mixture_log_density(logit_w: jax.Array, mu: jax.Array, log_s: jax.Array, x: jax.Array):
  """log p(x) of a mixture of logistics (a continuous density; the components on the last
  axis, x broadcast against the rest)."""
  return jax.nn.logsumexp(jax.nn.log_softmax(logit_w) +
                          log_density('logistic', x[..., None], mu, log_s), axis=-1)


def gaussian_kl(loc_q, log_s_q, loc_p, log_s_p) -> jax.Array:
  """KL(N(loc_q, e^{2 log_s_q}) || N(loc_p, e^{2 log_s_p})), elementwise, in nats."""
  return (log_s_p - log_s_q + 0.5 * (jnp.exp(2. * (log_s_q - log_s_p)) +
                                     jnp.square((loc_q - loc_p) * jnp.exp(-log_s_p))) - 0.5)


def logistic_mixture_kl(rng, loc_q, log_s_q, logit_w, mu, log_s, samples: int):
  """(KL(q || p), its cross-entropy H(q, p)) per step, estimated from `samples` reparameterised
  draws of the logistic q per step against the logistic mixture p (components on the last
  axis); the entropy H(q) = log_s_q + 2 is exact."""
  eps = jax.random.logistic(rng, (samples, *loc_q.shape))
  x = loc_q + jnp.exp(log_s_q) * eps
  ce = -jnp.mean(mixture_log_density(logit_w, mu, log_s, x), axis=0)
  return ce - (log_s_q + ENTROPY['logistic']), ce


def average_log_power(x: jax.Array) -> jax.Array:
  """[B, T] -> [B, 1 + POWER_FFT / 2]: log of the power spectrum averaged over frames."""
  s = spectral.stft(x, n_fft=POWER_FFT, hop_length=POWER_FFT // 4)
  return jnp.log(jnp.mean(jnp.square(jnp.abs(s)), axis=-1) + 1e-7)


# ------------------------------------------------------------------------------------------------
# The family functions.


def teacher_of(model: Student) -> nn.Module:
  """The frozen teacher's Model."""
  if not model.teacher:
    raise ValueError('model.teacher is empty: a distillation student needs config.teacher, the '
                     "teacher run's config (experiments/train_distill.py sets it from "
                     'config.teacher_workdir)')
  teacher = models.family(model.teacher_name).Model(**dict(model.teacher))
  want = TEACHER_OUTPUT[model.distribution]
  if teacher.output != want or teacher.encoding != 'linear' or teacher.num_classes != 2 ** 16:
    raise ValueError(f'the teacher is a {teacher.output} WaveNet on {teacher.encoding} codes '
                     f'of {teacher.num_classes} levels; a {model.distribution} student distils '
                     f"a '{want}' teacher on 16-bit 'linear' codes")
  if tuple(teacher.local_keys) != ('mel',) or teacher.hop_length != model.hop_length:
    raise ValueError(f'the teacher is conditioned on {tuple(teacher.local_keys)} at hop '
                     f"{teacher.hop_length}; the student on ('mel',) at hop {model.hop_length}")
  return teacher


def _mel(model: Student, batch: dict) -> jax.Array:
  conditioning.frames(batch, model.local_keys)  # the one-line error of a missing key
  return jnp.asarray(batch['mel'], jnp.float32)


def init(model: Student, rng: jax.Array, batch: dict) -> dict:
  """{'params': the student's, 'teacher': a teacher's parameters (random here; the trainer puts
  the trained teacher's in their place)}."""
  r1, r2 = jax.random.split(rng)
  x = jnp.zeros(jnp.shape(batch['audio']), jnp.float32)
  variables = model.init(r1, x, _mel(model, batch), method='inverse')
  teacher = teacher_of(model)
  codes = jnp.zeros(x.shape, jnp.int32)
  t_vars = teacher.init(r2, codes, **teacher.conditioning(batch))
  return {'params': variables['params'], 'teacher': t_vars['params']}


def _codes(x: jax.Array) -> jax.Array:
  """Float audio -> 16-bit linear codes (data/audio.py linear_encode)."""
  return jnp.round((jnp.clip(x, -1., 1.) + 1.) * (65535. / 2.)).astype(jnp.int32)


def loss(model: Student, variables: dict, batch: dict, rng) -> tuple:
  """(the distillation loss, metrics, model state) of the module docstring."""
  x_real = jnp.asarray(batch['audio'])
  if not jnp.issubdtype(x_real.dtype, jnp.floating):
    raise ValueError(f"batch['audio'] is {x_real.dtype}: a distillation student needs float "
                     "audio (config.input.encoding='float')")
  if rng is None:
    rng = jax.random.key(0)
  teacher, t_params = teacher_of(model), {'params': variables['teacher']}
  mel = _mel(model, batch)
  local = teacher.conditioning(batch)['local']
  r_noise, r_kl = jax.random.split(rng)
  z0 = flow_vocoder.NOISES[model.latent_noise](r_noise, x_real.shape)
  x, loc, log_s = model.apply({'params': variables['params']}, z0, mel, method='flow')
  out = teacher.apply(t_params, x, local)[:, :-1]  # position t predicts step t + 1
  loc, log_s = loc[:, 1:], log_s[:, 1:]
  mask = batch.get('mask', jnp.ones(x.shape[:1], bool))
  rows = jnp.maximum(jnp.sum(mask), 1)
  count = jnp.sum(mask) * loc.shape[1]
  mean = lambda v: jnp.sum(jnp.where(mask[:, None], v, 0.)) / (rows * loc.shape[1])
  row_mean = lambda v: jnp.sum(jnp.where(mask, v, 0.)) / rows
  metrics = {}
  if model.distribution == 'gaussian':
    mu_p, log_s_p = wavenet_params(teacher, out)
    kl = gaussian_kl(loc, log_s, mu_p, log_s_p)
    metrics['cross_entropy'] = mean(kl + log_s + ENTROPY['gaussian'])
    terms = {'log_scale_reg': (model.log_scale_reg, mean(jnp.square(log_s - log_s_p)))}
  else:
    kl, ce = logistic_mixture_kl(r_kl, loc, log_s, *wavenet_params(teacher, out),
                                 model.kl_samples)
    metrics['cross_entropy'] = mean(ce)
    terms = {}
  if model.power_loss:
    d = jnp.square(average_log_power(x) - average_log_power(x_real.astype(jnp.float32)))
    terms['power'] = (model.power_loss, row_mean(jnp.mean(d, axis=-1)))
  if model.stft_loss:
    per_row = jax.vmap(lambda a, b: spectral.multi_resolution_stft_loss(a[None], b[None]))
    terms['mr_stft'] = (model.stft_loss, row_mean(per_row(x, x_real.astype(jnp.float32))))
  metrics['kl'] = mean(kl)
  total = metrics['kl'] + sum(w * v for w, v in terms.values())
  metrics.update({k: v for k, (_, v) in terms.items()})
  metrics['entropy'] = mean(log_s) + ENTROPY[model.distribution]
  # The teacher's NLL (bits per 16-bit sample) of the student's sample and of the data.
  codes = jax.lax.stop_gradient(_codes(x))
  metrics['teacher_bits_student'] = mean(
      wavenet.nll(teacher, jax.lax.stop_gradient(out), codes[:, 1:])) / math.log(2.)
  real = _codes(x_real)
  out_real = jax.lax.stop_gradient(teacher.apply(t_params, real, local))[:, :-1]
  metrics['teacher_bits_data'] = mean(wavenet.nll(teacher, out_real, real[:, 1:])) / math.log(2.)
  metrics.update(loss=total, weight=count)
  return total, metrics, {'teacher': variables['teacher']}


def wavenet_params(teacher: nn.Module, out: jax.Array):
  """The teacher's output [..., F] as its distribution's parameters."""
  if teacher.output == 'gaussian':
    return wavenet.gaussian_params(out)
  return wavenet.mixture_params(teacher, out)
