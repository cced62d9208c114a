"""The README's install step, `pip install -e .`, in a fresh environment: `import streamsim`
works from any folder, and only `streamsim` is installed on the path, so a user's own
`common` or `logger` module and ours never meet."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import REPO

USER_CODE = """
import logger, common                      # the user's own modules, imported first
import streamsim
samples, windows = streamsim.generate("30s", seed=1, start="2025-08-04")
import logger as again
import common as also
import sys
assert again.WHO == "my logger" and also.WHO == "mine", (again, also)
assert len(samples) == 30 and str(samples["anomaly_id"].dtype) == "Int64"
ours = [m for m in sys.modules if m.split(".")[0] in ("producer", "broadcaster", "bridge")]
assert not ours, ours
print(streamsim.__file__)
"""


def run(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_pip_install_e_makes_streamsim_importable_anywhere_and_nothing_else(tmp_path: Path):
    """A clone installed with `pip install -e .` into a new environment (its dependencies
    taken from this one, offline): from a folder holding a user's `common.py` and
    `logger.py`, both the user's modules and streamsim work; elsewhere, `import common`
    finds nothing, since only streamsim is installed."""
    clone = tmp_path / "clone"
    shutil.copytree(
        REPO,
        clone,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "data", "*.egg-info", ".ci", ".pytest_cache"
        ),
    )
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = run(python, "import sysconfig; print(sysconfig.get_path('purelib'))", tmp_path)
    # This environment's packages (pip, setuptools, wheel, pandas, ...), without its own
    # .pth files: whatever it has installed of ours stays out of sight.
    Path(site.stdout.strip(), "dependencies.pth").write_text(sysconfig.get_path("purelib"))
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-e", str(clone)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    (notebook / "common.py").write_text('WHO = "mine"\n')
    (notebook / "logger.py").write_text('WHO = "my logger"\n')
    used = run(python, USER_CODE, notebook)
    assert used.returncode == 0, used.stderr
    assert Path(used.stdout.strip()) == clone / "streamsim" / "__init__.py"
    elsewhere = run(python, "import streamsim, common", tmp_path)
    assert "No module named 'common'" in elsewhere.stderr
