"""The benchmark scripts run their smallest version (--smoke; backfill's --quick is one already)
and write their JSON; timings are not checked here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import browser
from conftest import REPO


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, flag, result",
    [
        ("backfill.py", "--quick", "backfill.json"),
        ("pipeline.py", "--smoke", "pipeline.json"),
        ("timing.py", "--smoke", "timing.json"),
        ("fanout.py", "--smoke", "fanout-20x1x10.json"),
        ("idle.py", "--smoke", "idle.json"),
        ("resume.py", "--smoke", "resume.json"),
        ("stop.py", "--smoke", "stop.json"),
        ("scorer.py", "--smoke", "scorer.json"),
        ("dashboard.py", "--smoke", "dashboard.json"),
    ],
)
def test_benchmark_runs(tmp_path, script, flag, result):
    """Each benchmark script runs its smoke version to the end and writes its JSON report."""
    if script == "dashboard.py" and not browser.available():
        pytest.skip(browser.MISSING)
    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "STREAM_BENCH_RESULTS": str(tmp_path),
        "PATH": bin_dir + os.pathsep + os.environ["PATH"],
    }
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), flag],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads((tmp_path / result).read_text())
    assert data["benchmark"] and data["machine"]["cores"] >= 1
