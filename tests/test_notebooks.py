"""The example notebooks in docs/notebooks run to the end in a real Jupyter kernel, started in
a folder of their own, and are committed with their outputs (and no machine's paths)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("notebooks_run", REPO / "docs/notebooks/run.py")
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


@pytest.mark.slow
@pytest.mark.parametrize("path", run.NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_executes_in_a_real_kernel(path: Path, tmp_path: Path, monkeypatch):
    """Every cell runs without an error (nbclient raises CellExecutionError naming the cell),
    from a temporary folder; the live notebook's pipeline is stopped by its last cell."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # as `pip install -e .` would make it
    notebook = run.execute(path, tmp_path)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs)


@pytest.mark.parametrize("path", run.NOTEBOOKS, ids=lambda p: p.stem)
def test_the_committed_notebook_shows_its_results(path: Path):
    """Committed executed: each code cell numbered, in order, with its outputs (a chart
    among them), and nothing that names the machine it ran on."""
    text = path.read_text()
    notebook = json.loads(text)
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    assert any("image/png" in o.get("data", {}) for c in code for o in c["outputs"])
    for machine in (str(REPO), "/tmp/", "127.0.0.1", "localhost:"):
        assert machine not in text, machine
