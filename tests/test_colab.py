"""colab/wavenet_sampling.ipynb runs top to bottom in a kernel of this Python (4 training steps)."""

import os

from ipykernel import kernelspec
import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'colab', 'wavenet_sampling.ipynb')


def test_notebook_is_saved_clean():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  # A kernel spec of this interpreter, so that the notebook runs with this venv's packages
  # whatever `python3` kernels the machine has.
  kernelspec.write_kernel_spec(str(tmp_path / 'jupyter' / 'kernels' / 'wavegen-test'))
  monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter'))
  monkeypatch.setenv('WAVEGEN_NOTEBOOK_WORKDIR', str(tmp_path / 'workdir'))
  monkeypatch.setenv('WAVEGEN_NOTEBOOK_STEPS', '4')
  monkeypatch.setenv('WAVEGEN_NOTEBOOK_SECONDS', '0.25')
  monkeypatch.setenv('XLA_FLAGS', '')  # one device, as in Colab (conftest fakes 8)
  monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, kernel_name='wavegen-test', timeout=300,
                                   resources={'metadata': {'path': os.path.join(ROOT, 'colab')}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  assert 'wavenet at step 4' in text and 'bits/sample over' in text
  assert 'realtime factor' in text
  rich = [o for o in outputs if o.output_type == 'display_data']
  assert sum('text/html' in o.data for o in rich) == 4  # 2 streams x 2 Audio players
  assert any('image/png' in o.data for o in rich)  # the figure
  assert os.path.exists(os.path.join(tmp_path, 'workdir', 'eval_validation.json'))
