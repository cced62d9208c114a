"""The bridge's test helpers: start a bridge on a pipeline, read its /metrics, check what
reached the broker and what its gaps file says."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

from conftest import REPO, Pipeline, Proc, wait_until


def figure(proc: Proc, name: str, default: float | None = None) -> float:
    """One value of a bridge's /metrics (`default` if it has none such)."""
    port = proc.info["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^stream_{name}(?:_total)? (\S+)$", text, re.M)
    if match is None and default is not None:
        return default
    assert match, f"no {name} in /metrics"
    return float(match[1])


def bridge(
    pipeline: Pipeline, to: str, *args: str, gaps: str = "bridge.gaps.csv", wait: bool = True
) -> Proc:
    """A bridge on the pipeline's endpoints, once connected and subscribed (`wait`; else
    call its `ready` before using it); its state file is named after its gaps file (`args`
    may give another)."""
    state = pipeline.cwd / gaps.replace(".gaps.csv", ".state.json")
    proc = pipeline.start(
        "bridge",
        *("--zmq-pub", pipeline.zmq, "--zmq-catchup", pipeline.catchup, "--to", to),
        *("--metrics-port", "any", "--gaps-file", str(pipeline.cwd / gaps)),
        *("--state-file", str(state), *args),
    )
    if wait:
        proc.ready(timeout=30)
    return proc


def settled(*bridges: Proc, timeout: float = 60.0) -> None:
    """Wait until every bridge has had everything it received acknowledged, and, into
    Kafka, made final (its transactions' end markers written). The load tests feed a
    bridge faster than it sends (10,000 samples a second): on a busy machine draining that
    backlog took over 30 s."""
    wait_until(
        lambda: all(
            figure(b, "bridge_lag_samples") == 0
            and figure(b, "kafka_samples_unsettled", default=0) == 0
            for b in bridges
        ),
        timeout,
        message="the bridges still hold unacknowledged samples",
    )


def logged(path: Path) -> dict[tuple[str, int], dict[str, str]]:
    with open(path, newline="") as f:
        return {(r["device"], int(r["seq"])): r for r in csv.DictReader(f)}


def gap_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_same_sample(sample: dict, row: dict[str, str]) -> None:
    for metric in ("cpu", "mem", "disk_io", "net"):
        expected = float(row[metric]) if row[metric] else None
        assert sample[metric] == expected, (sample, row)
    assert sample["timestamp"] == row["timestamp"], (sample, row)
    assert (sample["anomaly"] or "") == row["anomaly"], (sample, row)
    assert str(sample["anomaly_id"] or "") == row["anomaly_id"], (sample, row)


def assert_contiguous_once(seqs: dict[str, list[int]]) -> None:
    for device, got in seqs.items():
        assert len(got) == len(set(got)), f"{device}: duplicates"
        ordered = sorted(got)
        assert ordered == list(range(ordered[0], ordered[-1] + 1)), f"{device}: missing seqs"


def run_bridge(cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "--gaps-file", str(cwd / "gaps.csv"), *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(run: subprocess.CompletedProcess, status: int, pattern: str) -> None:
    assert run.returncode == status, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("bridge: error: ")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), run.stderr


def given_up(path: Path, reason: str = "given_up") -> dict[str, list[tuple[int, int]]]:
    """Per device, the seq ranges the gaps file names (all with `reason`)."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for row in gap_rows(path):
        assert row["reason"] == reason, row
        ranges.setdefault(row["device"], []).append(
            (int(row["first_missing_seq"]), int(row["last_missing_seq"]))
        )
    return ranges
