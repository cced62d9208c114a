"""The Python API against the files it replaces, same run: a training set in memory with
`streamsim.generate`, and a log read with `streamsim.read_log`.

    python bench/api.py [--days 1] [--devices 10] [--runs 3] [--smoke]

generate: the typed frames in memory, against the CLI writing Parquet then
`pd.read_parquet` (the fastest way to the same frame without the API; its ids come back as
float64). read_log: a CLI CSV read into typed frames, against the README's
`pd.read_csv(..., parse_dates=["timestamp"])` (whose ids are float64 and timestamps naive).
The runs are interleaved, so the machine's load falls on all alike.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamsim  # noqa: E402
from bench._util import REPO, summary, table, write  # noqa: E402

START = "2025-08-04"


def cli(folder: Path, out: str, days: float, devices: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--no-progress", "--duration"]
        + [f"{days * 86_400:g}", "--devices", str(devices), "--seed", "42", "--start", START]
        + ["--out", out],
        cwd=folder,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )


def timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


@click.command()
@click.option("--days", default=1.0, show_default=True)
@click.option("--devices", default=10, show_default=True)
@click.option("--runs", default=3, show_default=True)
@click.option("--smoke", is_flag=True, help="An hour of two devices, one run.")
def main(days: float, devices: int, runs: int, smoke: bool) -> None:
    if smoke:
        days, devices, runs = 1 / 24, 2, 1
    samples = round(days * 86_400) * devices
    found: dict[str, list[float]] = {k: [] for k in ("api", "cli", "read_log", "read_csv")}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        cli(folder, "train.csv", days, devices)
        for _ in range(runs):
            found["api"].append(
                timed(
                    lambda: streamsim.generate(
                        f"{days * 86_400:g}", devices=devices, seed=42, start=START
                    )
                )
            )
            found["cli"].append(
                timed(
                    lambda: (
                        cli(folder, "train.parquet", days, devices),
                        pd.read_parquet(folder / "train.parquet"),
                    )
                )
            )
            found["read_log"].append(timed(lambda: streamsim.read_log(folder / "train.csv")))
            found["read_csv"].append(
                timed(lambda: pd.read_csv(folder / "train.csv", parse_dates=["timestamp"]))
            )
    stats = {k: summary(v) for k, v in found.items()}
    rate = {k: samples / s["median"] for k, s in stats.items()}
    rows = [
        ["what", "median s", "samples/s", "baseline, same run", "ratio"],
        [
            "generate (typed frames)",
            f"{stats['api']['median']:.2f}",
            f"{rate['api']:,.0f}",
            f"CLI Parquet + read_parquet {stats['cli']['median']:.2f} s",
            f"{stats['cli']['median'] / stats['api']['median']:.2f}x",
        ],
        [
            "read_log (typed frames)",
            f"{stats['read_log']['median']:.2f}",
            f"{rate['read_log']:,.0f}",
            f"pd.read_csv {stats['read_csv']['median']:.2f} s",
            f"{stats['read_csv']['median'] / stats['read_log']['median']:.2f}x",
        ],
    ]
    print(f"{samples:,} samples ({days:g} days x {devices} devices), {runs} run(s)")
    print(table(rows))
    write("api", {"samples": samples, "seconds": stats, "samples_per_s": rate})


if __name__ == "__main__":
    main()
