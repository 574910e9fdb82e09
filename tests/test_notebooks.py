"""Execute every notebook in notebooks/ headlessly with PRESET = "smoke" (nbclient).

Adding a notebook adds its test. The first code cell must be tagged `parameters` and set
PRESET = "full"; like papermill, we inject a cell right after it that overrides PRESET.
"""
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell must be tagged 'parameters'"
    assert 'PRESET = "full"' in code[0].source, f"{path.name}: the parameters cell must set PRESET = \"full\""
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name} is committed with outputs in cells {dirty}; clear them"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    injected = nbformat.v4.new_code_cell('PRESET = "smoke"  # injected by tests/test_notebooks.py')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(first + 1, injected)
    os.environ.setdefault("MPLBACKEND", "Agg")
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellExecutionError as e:
        # the short form a learner can act on: which cell, which error (not the kernel plumbing)
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
        pytest.fail(f"{path.name}: a cell failed in smoke mode:\n{plain[-3000:]}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
