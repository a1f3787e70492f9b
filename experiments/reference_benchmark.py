"""The reference WaveNet beside ours (experiments/benchmark.py --peer_json).

The reference is r9y9/wavenet_vocoder (PyTorch), timed on the same machine at its own benchmark
setting: training batch 4 x 8,000, generation for 1 and 16 streams. Its JSON holds
{'configs': {name: {'wavenet_kwargs': {layers, residual_channels, gate_channels,
skip_out_channels, kernel_size, out_channels}, 'train' | 'gen_1_stream' | 'gen_16_streams':
{'samples_per_s': ...}}}} with one config; ours must be the same network
(experiments/configs/wavenet.py:peer).
"""

import json
import os

from absl import logging


# The reference's figures that --peer_json sets beside ours: (its key, our key) per --what.
FIGURES = {
    'train': [('train', 'train_samples_per_s')],
    'sampler': [('gen_1_stream', 'sampler_1_stream_samples_per_s'),
                ('gen_16_streams', 'sampler_16_streams_samples_per_s')],
}


def load(path: str, config, what: str) -> dict:
  """The reference's figures for `--what` from its benchmark JSON at `path`, checked against
  `config` before anything is measured: {'reference': where it came from, 'rates': {our key:
  its samples/s}}. Raises ValueError (one line) for another --what, a file of another form, or
  a --config that is another network than the reference's."""
  if what not in FIGURES:
    raise ValueError(f'--peer_json: the reference has figures for --what='
                     f'{"|".join(FIGURES)}, not {what}')
  try:
    with open(path) as f:
      doc = json.load(f)
    (name, ref), = doc['configs'].items()
    arch = ref['wavenet_kwargs']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'--peer_json={path}: expected the reference benchmark\'s JSON with one '
                     f'config ({type(e).__name__}: {e})') from None
  m = config.model
  ours = {'layers': m.num_layers, 'residual_channels': m.residual_channels,
          'gate_channels': m.gate_channels, 'skip_out_channels': m.skip_channels,
          'kernel_size': m.kernel_size, 'out_channels': 2 ** config.input.bits}
  if config.model_name != 'wavenet' or any(arch.get(k) != v for k, v in ours.items()):
    raise ValueError(f'--peer_json={path} times the network {name} {arch}; --config is '
                     f'{config.model_name} {ours}: use experiments/configs/wavenet.py:peer')
  return {'reference': {'json': os.path.abspath(path), 'config': name,
                        'machine': doc.get('machine'), 'date_utc': doc.get('date_utc')},
          'rates': {key: ref[theirs]['samples_per_s'] for theirs, key in FIGURES[what]
                    if theirs in ref}}


def beside(reference: dict, ours_figures: dict) -> dict:
  """`load`'s figures beside ours: `<our key>_reference` and `<our key>_over_reference`."""
  out = {'reference': reference['reference']}
  for key, rate in reference['rates'].items():
    if key in ours_figures:
      out[f'{key}_reference'] = rate
      out[f'{key}_over_reference'] = ours_figures[key] / rate
      logging.info('%s: ours %.0f, reference %.0f, ratio %.2f', key, ours_figures[key], rate,
                   ours_figures[key] / rate)
  return out


def figures(path: str, config, what: str, ours_figures: dict) -> dict:
  """`beside(load(path, config, what), ours_figures)`."""
  return beside(load(path, config, what), ours_figures)
