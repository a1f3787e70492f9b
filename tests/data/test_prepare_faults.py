"""Dataset preparation under faults: each test makes one fault and checks its one-line report."""

import contextlib
import csv
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import soundfile as sf

from data import audio
from data import maestro
from data import workers
from tests.conftest import ROOT
from tests.conftest import TEST_CONFIG


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
  """A MAESTRO-format directory of 3 pieces of 2.5 s at 16 kHz: one per split."""
  out = tmp_path_factory.mktemp('faults') / 'maestro-v3.0.0'
  from data import corpus  # pylint: disable=g-import-not-at-top
  corpus.write_corpus(out, num_pieces=3, max_seconds=1.5, sample_rate=16000,
                      source='procedural', num_workers=1)
  return str(out)


@pytest.fixture(scope='module')
def tiny_built(tiny_dir, tmp_path_factory):
  """`tiny_dir` prepared with TEST_CONFIG: (builder, data_dir)."""
  data_dir = str(tmp_path_factory.mktemp('faults_tfds'))
  return maestro.prepare(TEST_CONFIG, manual_dir=tiny_dir, data_dir=data_dir), data_dir


def _copy(src, tmp_path, name='m'):
  d = str(tmp_path / name)
  shutil.copytree(src, d)
  return d


def _rows(d):
  with open(maestro.find_csv(d), newline='', encoding='utf-8-sig') as f:
    return list(csv.DictReader(f))


def _write_rows(d, rows, bom=False):
  with open(maestro.find_csv(d), 'w', newline='', encoding='utf-8-sig' if bom else 'utf-8') as f:
    w = csv.DictWriter(f, fieldnames=list(maestro.CSV_COLUMNS))
    w.writeheader()
    w.writerows(rows)


def _prepare(d, tmp_path, policy='fail', data_dir=None):
  return maestro.prepare(TEST_CONFIG, manual_dir=d, data_dir=data_dir or str(tmp_path / 'tfds'),
                         on_bad_file=policy)


def _one_line_error(d, tmp_path, error=maestro.BadFileError, policy='fail'):
  with pytest.raises(error) as e:
    _prepare(d, tmp_path, policy)
  message = str(e.value)
  assert '\n' not in message and 'tensorflow' not in message, message
  assert not maestro.Maestro(config=TEST_CONFIG, data_dir=str(tmp_path / 'tfds')).is_prepared()
  return message


# ---------------------------------------------------------------------------------------------
# 1. The source of a prepared dataset.


def test_source_is_recorded(tiny_built, tiny_dir):
  builder, _ = tiny_built
  with open(os.path.join(builder.data_dir, maestro.SOURCE_NAME)) as f:
    record = json.load(f)
  assert record['manual_dir'] == os.path.abspath(tiny_dir)
  assert record['csv'] == 'maestro-v3.0.0.csv' and len(record['csv_sha256']) == 64
  assert record['embedded_corpus_version'] is None


def test_another_manual_dir_is_refused(tiny_built, tiny_dir, tmp_path):
  _, data_dir = tiny_built
  other = _copy(tiny_dir, tmp_path, 'other')
  rows = _rows(other)
  rows[0]['canonical_title'] = 'Another piece'
  _write_rows(other, rows)
  with pytest.raises(ValueError) as e:
    maestro.prepare(TEST_CONFIG, manual_dir=other, data_dir=data_dir)
  message = str(e.value)
  assert tiny_dir in message and other in message and '\n' not in message, message


def test_the_embedded_corpus_is_another_source(tiny_built, tiny_dir, tmp_path, monkeypatch):
  _, data_dir = tiny_built
  monkeypatch.setenv('WAVEGEN_CACHE', str(tmp_path))
  with pytest.raises(ValueError, match='embedded corpus') as e:
    maestro.prepare(TEST_CONFIG, data_dir=data_dir)
  assert tiny_dir in str(e.value)
  assert not os.path.exists(maestro.embedded_dirs()[0])  # not generated just to be compared


def test_a_moved_copy_with_the_same_csv_is_accepted(tiny_built, tiny_dir, tmp_path):
  builder, data_dir = tiny_built
  moved = _copy(tiny_dir, tmp_path, 'moved')
  again = maestro.prepare(TEST_CONFIG, manual_dir=moved, data_dir=data_dir)
  assert again.data_dir == builder.data_dir


def test_a_dataset_without_a_record_is_accepted_with_a_warning(tiny_built, tiny_dir, tmp_path,
                                                                caplog):
  _, data_dir = tiny_built
  old = str(tmp_path / 'old')
  shutil.copytree(data_dir, old)
  builder = maestro.Maestro(config=TEST_CONFIG, data_dir=old)
  os.remove(os.path.join(builder.data_dir, maestro.SOURCE_NAME))
  with caplog.at_level('WARNING'):
    b = maestro.prepare(TEST_CONFIG, manual_dir=tiny_dir, data_dir=old)
  assert b.is_prepared() and 'before sources were recorded' in caplog.text


# ---------------------------------------------------------------------------------------------
# 2. The command line prints one line and exits non-zero.


def test_cli_prints_one_line_on_a_bad_file(tiny_dir, tmp_path):
  d = _copy(tiny_dir, tmp_path)
  rows = _rows(d)
  rows[0]['duration'] = 'nan'
  _write_rows(d, rows)
  out = subprocess.run([sys.executable, '-m', 'data.prepare', f'--manual_dir={d}',
                        f'--data_dir={tmp_path / "tfds"}', '--config=sr16000_seg16000_hop500',
                        '--num_workers=1'], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 1, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  errors = [l for l in out.stderr.splitlines() if l.startswith('prepare: error:')]
  assert len(errors) == 1 and out.stderr.splitlines()[-1] == errors[0], out.stderr[-2000:]
  assert 'maestro-v3.0.0.csv:2' in errors[0] and "'nan'" in errors[0]


# ---------------------------------------------------------------------------------------------
# 3-7. The CSV.


def test_csv_with_a_byte_order_mark(tiny_dir, tmp_path):
  d = _copy(tiny_dir, tmp_path)
  _write_rows(d, _rows(d), bom=True)
  with open(maestro.find_csv(d), 'rb') as f:
    assert f.read(3) == b'\xef\xbb\xbf'
  pieces, bad = maestro.read_csv(maestro.find_csv(d))
  assert len(pieces) == 3 and not bad
  assert len(_prepare(d, tmp_path).as_data_source()['train']) == 2


def test_header_only_csv(tiny_dir, tmp_path):
  d = _copy(tiny_dir, tmp_path)
  _write_rows(d, [])
  message = _one_line_error(d, tmp_path)
  assert message == (f'{maestro.find_csv(d)}: CSV has a header but no rows; expected one row '
                     'per piece')


@pytest.mark.parametrize('policy', ['fail', 'skip'])
def test_duplicate_row(policy, tiny_dir, tmp_path):
  d = _copy(tiny_dir, tmp_path)
  rows = _rows(d)
  _write_rows(d, rows + [rows[0]])
  csv_path = maestro.find_csv(d)
  if policy == 'fail':
    message = _one_line_error(d, tmp_path)
    assert message.startswith(f'{csv_path}:5: duplicate row')
    assert rows[0]['audio_filename'] in message
  else:
    b = _prepare(d, tmp_path, 'skip')
    with open(os.path.join(b.data_dir, maestro.REPORT_NAME)) as f:
      (bad,) = json.load(f)['bad_files']
    assert 'duplicate row' in bad['fault'] and len(b.as_data_source()['train']) == 2


@pytest.mark.parametrize('duration', ['nan', 'inf', '-inf', '0', '-2.5'])
def test_duration_not_positive_and_finite(duration, tiny_dir, tmp_path):
  d = _copy(tiny_dir, tmp_path)
  rows = _rows(d)
  rows[1]['duration'] = duration
  _write_rows(d, rows)
  message = _one_line_error(d, tmp_path)
  assert message.startswith(f'{maestro.find_csv(d)}:3: bad row')
  assert repr(duration) in message and rows[1]['audio_filename'] in message


@pytest.mark.parametrize('key,path', [('audio_filename', '../outside.wav'),
                                      ('audio_filename', '2004/../../outside.wav'),
                                      ('audio_filename', 'ABSOLUTE'),
                                      ('midi_filename', '../outside.midi')])
def test_paths_that_leave_manual_dir(key, path, tiny_dir, tmp_path, monkeypatch):
  d = _copy(tiny_dir, tmp_path)
  rows = _rows(d)
  # Working files outside: a check that opened them would pass.
  shutil.copy(os.path.join(d, rows[0]['audio_filename']), tmp_path / 'outside.wav')
  shutil.copy(os.path.join(d, rows[0]['midi_filename']), tmp_path / 'outside.midi')
  path = str(tmp_path / 'outside.wav') if path == 'ABSOLUTE' else path
  rows[0][key] = path
  _write_rows(d, rows)
  opened = []
  for name in ('audio_info', 'read_audio'):
    real = getattr(audio, name)
    monkeypatch.setattr(audio, name, lambda p, *a, real=real, **k: (opened.append(str(p)),
                                                                  real(p, *a, **k))[1])
  message = _one_line_error(d, tmp_path)
  assert f'{key} {path!r} leaves manual_dir {d}' in message, message
  # Under 'skip' the row is dropped unread; the split it held is then empty.
  message = _one_line_error(d, tmp_path, policy='skip')
  assert "split 'train' is empty" in message
  assert not [p for p in opened if 'outside' in p], opened


# ---------------------------------------------------------------------------------------------
# 8-9. The audio.


def _mp3_bytes(tmp_path, seconds=1.0):
  p = str(tmp_path / 'x.mp3')
  x = 0.1 * np.sin(np.arange(int(seconds * 16000)) / 10).astype(np.float32)
  sf.write(p, x, 16000, format='MP3')
  with open(p, 'rb') as f:
    return f.read()


def test_lossy_audio_behind_a_wav_name(tmp_path):
  x = 0.1 * np.sin(np.arange(16000) / 10).astype(np.float32)
  mp3 = tmp_path / 'mp3.wav'
  mp3.write_bytes(_mp3_bytes(tmp_path))
  ulaw = tmp_path / 'ulaw.wav'
  sf.write(ulaw, x, 16000, format='WAV', subtype='ULAW')
  ogg = tmp_path / 'ogg.wav'
  sf.write(ogg, x, 16000, format='OGG', subtype='VORBIS')
  for path, kind in [(mp3, 'MP3'), (ulaw, 'WAV ULAW'), (ogg, 'OGG VORBIS')]:
    with pytest.raises(audio.AudioError) as e:
      audio.read_audio(path)
    assert str(e.value).startswith(f'{path}: audio is {kind}') and 'not PCM' in str(e.value)


def test_lossy_audio_in_a_dataset(tiny_dir, tmp_path):
  d = _copy(tiny_dir, tmp_path)
  row = _rows(d)[0]
  with open(os.path.join(d, row['audio_filename']), 'wb') as f:
    f.write(_mp3_bytes(tmp_path, float(row['duration'])))  # decodes to the CSV's duration
  message = _one_line_error(d, tmp_path)
  assert message.startswith(os.path.join(d, row['audio_filename'])) and 'not PCM' in message


@pytest.mark.parametrize('fault,words', [('nan', 'NaN or infinite'), ('inf', 'NaN or infinite'),
                                         ('loud', 'beyond full scale')])
def test_float_audio_out_of_range(fault, words, tiny_dir, tmp_path):
  d = _copy(tiny_dir, tmp_path)
  row = _rows(d)[0]
  path = os.path.join(d, row['audio_filename'])
  x, sr = sf.read(path, dtype='float32')
  x[100] = {'nan': np.nan, 'inf': np.inf, 'loud': 1.5}[fault]
  sf.write(path, x, sr, subtype='FLOAT')
  with pytest.raises(audio.AudioError, match=words):
    audio.read_audio(path)
  message = _one_line_error(d, tmp_path)
  assert message.startswith(f'{path}: float audio') and words in message
  x[100] = 1.0  # full scale itself is fine
  sf.write(path, x, sr, subtype='FLOAT')
  assert np.max(audio.read_audio(path)[0]) <= 1.0


# ---------------------------------------------------------------------------------------------
# 10. Empty splits.


def test_csv_without_validation_rows(tiny_dir, tmp_path):
  d = _copy(tiny_dir, tmp_path)
  _write_rows(d, [r for r in _rows(d) if r['split'] != 'validation'])
  message = _one_line_error(d, tmp_path, policy='skip')
  assert message == (f"{maestro.find_csv(d)}: split 'validation' is empty: the CSV lists no "
                     'piece in it')


def test_every_piece_of_a_split_skipped(tiny_dir, tmp_path):
  d = _copy(tiny_dir, tmp_path)
  os.remove(os.path.join(d, next(r for r in _rows(d) if r['split'] == 'test')['audio_filename']))
  message = _one_line_error(d, tmp_path, policy='skip')
  assert "split 'test' is empty: all 1 of its pieces are bad" in message


# ---------------------------------------------------------------------------------------------
# 11. A read-only data_dir holding a complete dataset.


def test_complete_dataset_is_read_without_the_lock(tiny_built, tiny_dir, tmp_path, monkeypatch):
  _, data_dir = tiny_built
  copy = str(tmp_path / 'ro')
  shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns('.prepare.lock'))

  def no_lock(path):
    raise AssertionError(f'took the lock {path}')

  monkeypatch.setattr(workers, 'file_lock', no_lock)
  b = maestro.prepare(TEST_CONFIG, manual_dir=tiny_dir, data_dir=copy)
  assert len(b.as_data_source()['train']) == 2
  assert not os.path.exists(os.path.join(copy, '.prepare.lock'))


_READ_ONLY = """
import sys
from data import maestro
from tests.conftest import TEST_CONFIG
b = maestro.prepare(TEST_CONFIG, manual_dir=sys.argv[1], data_dir=sys.argv[2])
print(len(b.as_data_source()['train']))
"""


def test_read_only_data_dir(tiny_built, tiny_dir):
  """A really read-only copy: chmod, or as root (which writes through permissions) a read-only
  bind mount in a private mount namespace."""
  _, data_dir = tiny_built
  root = tempfile.mkdtemp(prefix='wavegen-ro-')
  manual, copy = os.path.join(root, 'maestro'), os.path.join(root, 'tfds')
  try:
    shutil.copytree(tiny_dir, manual)
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns('.prepare.lock'))
    command = [sys.executable, '-c', _READ_ONLY, manual, copy]
    if os.geteuid() == 0:
      if not shutil.which('unshare'):
        pytest.skip('running as root without unshare: cannot make a read-only directory')
      command = ['unshare', '-m', 'sh', '-c', f'{{ mount --bind {root} {root} && mount -o '
                 f'remount,bind,ro {root}; }} || exit 97; touch {copy}/probe 2>/dev/null; '
                 'exec "$@"', 'sh'] + command
    else:
      for top, _, _ in os.walk(root):
        os.chmod(top, 0o555)
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if os.geteuid() == 0 and (out.returncode == 97 or out.stderr.startswith('unshare:')):
      pytest.skip(f'cannot mount read-only here: {out.stderr.strip()[-300:]}')
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-1] == '2'
    assert not os.path.exists(os.path.join(copy, 'probe'))  # it was read-only
    assert not os.path.exists(os.path.join(copy, '.prepare.lock'))
  finally:
    for top, _, _ in os.walk(root):
      os.chmod(top, 0o755)
    shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# 12. Killed preparations: workers die with their parent, leftovers are removed, SIGTERM exits 0.

# Runs as a script (so that the spawned workers can unpickle `slow`): prepares argv[1] into
# argv[2] with 2 workers, each piece taking argv[3] s longer.
_DRIVER = """
import sys
import time
sys.path.insert(0, {root!r})
from data import maestro


def slow(*args):
  time.sleep(float(sys.argv[3]))
  return _real(*args)


_real = maestro.piece_examples
if __name__ == '__main__':
  maestro.piece_examples = slow
  maestro.prepare('sr16000_seg16000_hop500', manual_dir=sys.argv[1], data_dir=sys.argv[2],
                  num_workers=2)
  print('prepared')
"""


def _children(pid):
  """Live (not zombie) processes whose parent is `pid`."""
  found = []
  for entry in os.listdir('/proc'):
    try:
      with open(f'/proc/{entry}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
      continue
    if int(fields[1]) == pid and fields[0] != 'Z':
      found.append(int(entry))
  return found


def _alive(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def _incomplete(data_dir):
  return [d for d in glob.glob(os.path.join(data_dir, 'maestro', '*', 'incomplete.*'))]


def _start_and_wait_for_workers(tiny_dir, tmp_path, seconds):
  driver = tmp_path / 'driver.py'
  driver.write_text(_DRIVER.format(root=ROOT))
  data_dir = str(tmp_path / 'tfds')
  proc = subprocess.Popen([sys.executable, str(driver), tiny_dir, data_dir, str(seconds)],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 60
  while time.time() < deadline:  # workers started and TFDS writing into incomplete.*
    workers = [p for p in _children(proc.pid) if 'spawn_main' in _cmdline(p)]
    if len(workers) == 2 and _incomplete(data_dir):
      return proc, workers, data_dir
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    time.sleep(0.1)
  proc.kill()
  pytest.fail('the preparation did not start its workers in 60 s')


def _cmdline(pid):
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return f.read().decode(errors='replace')
  except OSError:
    return ''


def _wait_gone(pids, timeout):
  deadline = time.time() + timeout
  while time.time() < deadline and any(map(_alive, pids)):
    time.sleep(0.1)
  return [p for p in pids if _alive(p)]


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
def test_sigkill_leaves_no_workers_and_the_next_preparation_cleans_up(tiny_dir, tmp_path, caplog):
  proc, workers, data_dir = _start_and_wait_for_workers(tiny_dir, tmp_path, 60)
  try:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not _wait_gone(workers, 10), 'workers outlived their killed parent'
    (left,) = _incomplete(data_dir)  # what the killed preparation leaves
    with caplog.at_level('WARNING'):
      b = maestro.prepare(TEST_CONFIG, manual_dir=tiny_dir, data_dir=data_dir)
    assert b.is_prepared() and not _incomplete(data_dir)
    assert f'Removed {left}' in caplog.text
  finally:
    for pid in [proc.pid] + workers:
      with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
def test_sigterm_cleans_up_and_exits_0(tiny_dir, tmp_path):
  proc, workers, data_dir = _start_and_wait_for_workers(tiny_dir, tmp_path, 60)
  try:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-3000:]
    assert 'SIGTERM: stopped preparing' in out and 'prepared' not in out.split('\n')[-2:]
    assert not _wait_gone(workers, 10)
    assert not _incomplete(data_dir)
    assert not maestro.Maestro(config=TEST_CONFIG, data_dir=data_dir).is_prepared()
  finally:
    for pid in [proc.pid] + workers:
      with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
