"""Execute the example notebooks in a real Jupyter kernel and keep their outputs, so that
they render with results on the repository host: `python docs/notebooks/run.py`.

Each runs in a temporary folder (as a notebook started anywhere would), in a kernel of
this Python. The tests execute them the same way (tests/test_notebooks.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))
TIMEOUT_S = 120  # per cell


def execute(path: Path, folder: Path) -> nbformat.NotebookNode:
    """The notebook at `path` with every cell executed in `folder`; nbclient's
    CellExecutionError (the cell, its traceback) if one fails."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()
    return notebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, default=NOTEBOOKS)
    args = parser.parse_args()
    # Without `pip install -e .`, the kernel finds streamsim in this clone.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(HERE.parent.parent), os.environ.get("PYTHONPATH")])
    )
    for path in args.notebooks:
        with tempfile.TemporaryDirectory() as folder:
            notebook = execute(path, Path(folder))
        nbformat.write(notebook, path)
        print(f"executed {path.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
