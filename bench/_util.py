"""Shared pieces of the benchmark scripts: repetitions, percentiles, process usage, output.

Every benchmark compares against a baseline measured in the same run, so the ratio holds
on a noisy machine; results go to a table on stdout and to JSON under bench/results/.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(os.environ.get("STREAM_BENCH_RESULTS", REPO / "bench" / "results"))


def summary(values: list[float]) -> dict[str, float]:
    """Median and range of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    if not len(a):
        return {"p50": float("nan"), "p99": float("nan"), "p99.9": float("nan")}
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {"p50": float(p50), "p99": float(p99), "p99.9": float(p999)}


def machine() -> dict[str, str | int]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count() or 0,
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def write(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        **result,
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class Usage:
    """CPU seconds and peak RSS of a process, sampled while it runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_rss = 0
        self.cpu_start = sum(self.process.cpu_times()[:2])
        self.wall_start = time.monotonic()

    def restart(self) -> None:
        """Count CPU from now on (peak RSS is kept)."""
        self.sample()
        self.cpu_start = getattr(self, "_cpu", self.cpu_start)
        self.wall_start = time.monotonic()

    def sample(self) -> None:
        try:
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
            self._cpu = sum(self.process.cpu_times()[:2])
        except psutil.Error:
            pass

    def report(self) -> dict[str, float]:
        self.sample()
        wall = time.monotonic() - self.wall_start
        cpu = getattr(self, "_cpu", self.cpu_start) - self.cpu_start
        return {
            "cpu_percent": 100 * cpu / wall if wall else 0.0,
            "wall_s": wall,
            "peak_rss_mb": self.peak_rss / 2**20,
        }


def start(module: str, *args: str, cwd: Path) -> subprocess.Popen:
    """`python -m module args` in `cwd`, logging to `cwd/module.log`; see `ready`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("HONCHO_PROCESS_NAME", None)
    ready_file = cwd / f"{module}-{time.monotonic_ns()}.ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--ready-file", str(ready_file), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(cwd / f"{module}.log", "a"),
    )
    proc.ready_file = ready_file  # type: ignore[attr-defined]
    return proc


def ready(proc: subprocess.Popen, timeout: float = 30.0) -> dict:
    """What a process started by `start` wrote to its ready file, once it is serving."""
    deadline = time.monotonic() + timeout
    path: Path = proc.ready_file  # type: ignore[attr-defined]
    while True:
        try:
            info = json.loads(path.read_text())
            if info.get("pid") == proc.pid:
                return info
        except (OSError, ValueError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args} did not get ready (exit status {proc.poll()})")
        time.sleep(0.02)


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
