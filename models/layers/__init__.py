"""Model code that families share, written once.

    params.py          parameter helpers (logically partitioned params and dense layers), the
                       nested parameter dict of a module, dtype casts
    sampling.py        drawing from logits (Gumbel-max), per-stream keys, the softmax NLL,
                       splitting streams over host threads on CPU
    conditioning.py    batch keys -> conditioning arrays (frame features scaled to [0, 1],
                       global ids)
    autoregressive.py  what every autoregressive family over audio codes shares: teacher-forced
                       loss, init from a batch, float prompt -> codes -> float audio chunks
    flows.py           invertible layers with log-determinants (1x1 convolution, ActNorm,
                       affine coupling, squeeze, WaveFlow's 2-D autoregressive flow), the WN
                       network of couplings, the mel upsampler
    flow_vocoder.py    what the mel-conditioned flows share: their data fields, the likelihood
                       in bits per 16-bit sample, sampling window by window without seams
"""
