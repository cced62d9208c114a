"""`python -m producer generate`: the command is the backfill (producer.backfill.generate)
behind options, and writes byte for byte what it wrote before it became one code path."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

START = "2025-08-04T00:00:00"
SCENARIO = """
name = "generate check"
[[group]]
name = "caches"
role = "cache"
count = 2
[[group]]
role = "batch"
count = 2
id = "job-{n}"

[[incident]]
at = "+10m"
root = "caches-01"
duration = "5m"
  [[incident.symptom]]
  group = "batch"
  stagger = "15s"

[[load_test]]
at = "+40m"
group = "caches"
duration = "10m"
"""

# The files of a few settings and their SHA-256, as the command wrote them before it called
# the backfill (CSV; Parquet, whose footer names the pinned pyarrow; windows beside each).
# A change meant to alter the data (the model, the rendering) updates them.
SETTINGS = {
    "csv, 1 Hz, anomalies": (
        ["--rate", "1", "--duration", "1h", "--devices", "3", "--seed", "7"]
        + ["--anomaly-rate", "60", "--out", "train.csv"],
        {
            "train.csv": "ed217c0df3b1a268c80bd6d8a09a581f51c0b70ebe5674c0f7cbe118f9c90fef",
            "train.windows.csv": "7e2da0c5ef0f7ab5f267f39674601ac969f177cb9aacbc34fd66a57b021d7259",
        },
    ),
    "parquet, 10 Hz, roles, durations": (
        ["--rate", "10", "--duration", "6m", "--devices", "2", "--seed", "7"]
        + ["--anomaly-rate", "60", "--anomaly-duration", "spike=1s-10s,drift=5m-20m"]
        + ["--roles", "web=1,db=1", "--out", "train.parquet"],
        {
            "train.parquet": "8dc56a6bd5c96299248e518615c24d2c3f563f80d5fe1285e081cde9bda58add",
            "train.windows.csv": "cfe6399eb12857ffb81b9c5e93e093a54dd4ec22d072858dbe13738f2020a572",
        },
    ),
    "parquet by --format, 0.3 Hz, fractional duration": (
        ["--rate", "0.3", "--duration", "1.5h", "--devices", "2", "--seed", "3"]
        + ["--anomaly-kinds", "all,spike=3", "--format", "parquet", "--out", "train.data"],
        {
            "train.data": "6fe0ac167dd548c6767c074a6dfa2a724914062543269dbd5e4d6775bafe89f6",
            "train.windows.csv": "c17759ad64fa435ae5647a402c179c78eb41a736d4fc4aad5edf88d10b371666",
        },
    ),
    "csv, scenario": (
        ["--scenario", "fleet.toml", "--duration", "1h", "--seed", "1", "--out", "train.csv"],
        {
            "train.csv": "3e32d51a738853ace82ffd47682db40f6a00b59431b218969c6fe9e4f5857b03",
            "train.windows.csv": "9db39a84c03addb092879c84eb6dc1df24c4f95b787b691175fedf6a638fcae2",
        },
    ),
}


def generate(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m producer generate ARGS` run to its end, with no STREAM_* settings leaking in."""
    return subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--no-progress", "--start", START, *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("name", SETTINGS)
def test_generate_writes_the_bytes_it_wrote_before(tmp_path, name):
    """Each setting's data and windows files are the very bytes of before, and stderr says
    what was written in two lines (the count, then the files and the seed)."""
    args, expected = SETTINGS[name]
    (tmp_path / "fleet.toml").write_text(SCENARIO)
    result = generate(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    digests = {f: hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in expected}
    assert digests == expected
    count, wrote = result.stderr.splitlines()
    assert count.endswith(" samples") and wrote.startswith(f"wrote {count}")
