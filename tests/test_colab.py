"""The notebooks in colab/ are saved clean and run top to bottom in a kernel of this Python (4
training steps per run)."""

import os

from ipykernel import kernelspec
import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'colab', 'wavenet_sampling.ipynb')
VQVAE_NOTEBOOK = os.path.join(ROOT, 'colab', 'vqvae_hierarchy.ipynb')
W2M2W_NOTEBOOK = os.path.join(ROOT, 'colab', 'wave2midi2wave.ipynb')


@pytest.mark.parametrize('path', [NOTEBOOK, VQVAE_NOTEBOOK, W2M2W_NOTEBOOK])
def test_notebook_is_saved_clean(path):
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code and all(not c.outputs and c.execution_count is None for c in code)


def _execute(path, tmp_path, monkeypatch):
  """The notebook at `path` run top to bottom with 4 training steps per run and 0.25-s samples,
  its workdir under tmp_path; its code cells' outputs."""
  # A kernel spec of this interpreter, so that the notebook runs with this venv's packages
  # whatever `python3` kernels the machine has.
  kernelspec.write_kernel_spec(str(tmp_path / 'jupyter' / 'kernels' / 'wavegen-test'))
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  monkeypatch.setenv('WAVEGEN_NOTEBOOK_WORKDIR', str(tmp_path / 'workdir'))
  monkeypatch.setenv('WAVEGEN_NOTEBOOK_STEPS', '4')
  monkeypatch.setenv('WAVEGEN_NOTEBOOK_SECONDS', '0.25')
  monkeypatch.setenv('XLA_FLAGS', '')  # one device, as in Colab (conftest fakes 8)
  monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(nb, kernel_name='wavegen-test', timeout=300,
                                   resources={'metadata': {'path': os.path.join(ROOT, 'colab')}})
  client.execute()
  return [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]


@pytest.mark.slow
def test_vqvae_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  outputs = _execute(VQVAE_NOTEBOOK, tmp_path, monkeypatch)
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  assert 'level1: 4 steps' in text and 'prior: 4 steps' in text
  assert 'description length:' in text and 'it sees 0.51 s' in text
  assert text.count('realtime factor') == 4  # new, continued, two reconstructions
  rich = [o for o in outputs if o.output_type == 'display_data']
  assert sum('text/html' in o.data for o in rich) == 7  # 2 new, 2 continued, prompt, 2 levels
  assert any('image/png' in o.data for o in rich)


@pytest.mark.slow
def test_wave2midi2wave_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  outputs = _execute(W2M2W_NOTEBOOK, tmp_path, monkeypatch)
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  for stage in ('transcriber', 'composer', 'synthesizer'):
    assert f'{stage}: 4 steps' in text
  for route in ('resynthesize', 'continue', 'compose', 'adherence'):
    assert f'{route}: ' in text and os.path.exists(
        os.path.join(tmp_path, 'workdir', route, 'scores.json'))
  assert 'adherence: note F1' in text and 'ceiling: note F1' in text
  rich = [o for o in outputs if o.output_type == 'display_data']
  assert sum('text/html' in o.data for o in rich) == 5  # the piece and 4 syntheses
  assert any('image/png' in o.data for o in rich)


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  outputs = _execute(NOTEBOOK, tmp_path, monkeypatch)
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  assert 'wavenet at step 4' in text and 'bits/sample over' in text
  assert 'realtime factor' in text
  rich = [o for o in outputs if o.output_type == 'display_data']
  assert sum('text/html' in o.data for o in rich) == 4  # 2 streams x 2 Audio players
  assert any('image/png' in o.data for o in rich)  # the figure
  assert os.path.exists(os.path.join(tmp_path, 'workdir', 'eval_validation.json'))
