r"""Builds the Maestro TFDS dataset and prints what it holds.

    python -m data.prepare                      # the embedded corpus, generated and cached
    python -m data.prepare --manual_dir=/path/to/maestro-v3.0.0 \
        --data_dir=~/tensorflow_datasets --config=24k --num_workers=8 --on_bad_file=skip
    python -m data.prepare --instruments        # the multi-instrument dataset (data/instruments.py)

A dataset that is already prepared is not built again. A preparation error (a bad file, a
dataset prepared from another source, a directory that cannot be written) prints one line on
stderr, no traceback, and exits with status 1.
"""

import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from data import instruments
from data import maestro


def define_flags() -> None:
  """The job's flags, defined only when it runs as a program."""
  flags.DEFINE_string('manual_dir', None, 'MAESTRO directory (holding maestro-vX.Y.Z.csv); '
                      'default: the embedded corpus, generated under $WAVEGEN_CACHE '
                      '(~/.cache/wavegen).')
  flags.DEFINE_string('data_dir', None, 'TFDS data_dir to build into; default: TFDS\'s for '
                      'MAESTRO, the cache for the embedded corpus.')
  flags.DEFINE_string('config', '16k', "'16k', '24k' or 'sr{rate}_seg{samples}_hop{hop}'.")
  flags.DEFINE_enum('on_bad_file', 'fail', ['fail', 'skip'],
                    "'fail': stop at the first bad file; 'skip': leave it out and list it in "
                    'bad_files.json.')
  flags.DEFINE_integer('num_workers', os.cpu_count(), 'Preparation processes.')
  flags.DEFINE_bool('instruments', False, 'Build the multi-instrument dataset (a CSV with an '
                    'instrument column; default: the embedded multi-instrument corpus).')


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  t = time.time()
  f = flags.FLAGS
  try:
    prepare = instruments.prepare if f.instruments else maestro.prepare
    builder = prepare(f.config, f.manual_dir, f.data_dir, on_bad_file=f.on_bad_file,
                              num_workers=f.num_workers)
  except (ValueError, OSError) as e:  # BadFileError is a ValueError
    print('prepare: error: ' + ' '.join(str(e).split('\n')), file=sys.stderr)
    sys.exit(1)
  print(maestro.describe(builder))
  print(f'ready in {time.time() - t:.1f} s')


if __name__ == '__main__':
  define_flags()
  app.run(main)
