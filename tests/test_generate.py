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

# The files of a few settings and their SHA-256, as the command wrote them once it called the
# backfill (CSV; Parquet, whose footer names the pinned pyarrow; windows beside each).
# A change meant to alter the data (the model, the rendering) updates them. Last updated for
# the anomaly_metrics column (CSV, Parquet), the UTC `Z` of the windows' timestamps, windows
# sorted by start and Parquet's pandas metadata: every row otherwise equal to the earlier
# files' (checked against the earlier code when the hashes changed).
SETTINGS = {
    "csv, 1 Hz, anomalies": (
        ["--rate", "1", "--duration", "1h", "--devices", "3", "--seed", "7"]
        + ["--anomaly-rate", "60", "--out", "train.csv"],
        {
            "train.csv": "943985e73a4bc2906153762da6129a79167760866ff1eadb7c19df5981fc26f6",
            "train.windows.csv": "91db79eb06a0a500b15285f6fa7385f0a7243ebb0bec58415bf92ffb875c2938",
        },
    ),
    "parquet, 10 Hz, roles, durations": (
        ["--rate", "10", "--duration", "6m", "--devices", "2", "--seed", "7"]
        + ["--anomaly-rate", "60", "--anomaly-duration", "spike=1s-10s,drift=5m-20m"]
        + ["--roles", "web=1,db=1", "--out", "train.parquet"],
        {
            "train.parquet": "5f3a6ca3f37ee85e8fc215c717b17fed31b93bbf6225b6a2837b82b343fce29c",
            "train.windows.csv": "549fd040047bb91be3e689a4d061154881b519fb9e07a5d848ea5ce2935bfc63",
        },
    ),
    "parquet by --format, 0.3 Hz, fractional duration": (
        ["--rate", "0.3", "--duration", "1.5h", "--devices", "2", "--seed", "3"]
        + ["--anomaly-kinds", "all,spike=3", "--format", "parquet", "--out", "train.data"],
        {
            "train.data": "c313dfcc5043a205f57eaae881ce6290af998339817bd249f8feafbb1a8c8d6e",
            "train.windows.csv": "c17759ad64fa435ae5647a402c179c78eb41a736d4fc4aad5edf88d10b371666",
        },
    ),
    "csv, scenario": (
        ["--scenario", "fleet.toml", "--duration", "1h", "--seed", "1", "--out", "train.csv"],
        {
            "train.csv": "6e2a52104d74114300d43f80f5a588ea5d4766c8146e7475a53570acf12118cf",
            "train.windows.csv": "06ea89c5db3a7c2822d7bae09dfb512904cfad4fcd4b65e24983813dd1992ff6",
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
