"""Backfill throughput: `python -m producer generate` against the spec's original design.

    python bench/backfill.py [--quick]

Ours: the model with labels and windows, rendered in batches on every core. Baseline:
uniform random samples appended to the CSV one row at a time with a one-row pandas
DataFrame, as the spec's simulator did. Both write real files; the ratio is per sample.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import summary, table, write  # noqa: E402
from producer.backfill import generate  # noqa: E402
from producer.model.anomalies import SIMULATED_KINDS  # noqa: E402
from producer.series import Series  # noqa: E402


def naive(path: Path, seconds: float) -> float:
    """Rows per second of the spec's design: one-row DataFrame appended per sample."""
    rng = np.random.default_rng(0)
    start, rows = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        row = {
            "timestamp": pd.Timestamp.now().strftime("%Y-%m-%d %H:%M:%S"),
            "cpu": round(rng.uniform(20, 80), 1),
            "mem": round(rng.uniform(30, 90), 1),
            "disk_io": round(rng.uniform(50, 200), 1),
            "net": round(rng.uniform(20, 100), 1),
        }
        pd.DataFrame([row]).to_csv(path, mode="a", header=not path.exists(), index=False)
        rows += 1
    return rows / (time.perf_counter() - start)


def ours(path: Path, days: float, devices: int) -> float:
    series = Series(
        seed=1, devices=devices, rate=1.0, origin_ms=1_754_265_600_000, wall_origin_ms=0, seq_base=0
    )
    rows, seconds = generate(path, series, int(days * 86_400), 4.0, SIMULATED_KINDS)
    return rows / seconds


@click.command()
@click.option("--quick", is_flag=True, help="Smaller runs (a smoke test).")
@click.option("--runs", default=3, show_default=True)
def main(quick: bool, runs: int) -> None:
    days, devices, naive_s = (0.05, 10, 0.5) if quick else (2.0, 10, 3.0)
    runs = 1 if quick else runs
    with tempfile.TemporaryDirectory() as tmp:
        ours_rates = [ours(Path(tmp) / f"ours{i}.csv", days, devices) for i in range(runs)]
        naive_rates = [naive(Path(tmp) / f"naive{i}.csv", naive_s) for i in range(runs)]
    o, n = summary(ours_rates), summary(naive_rates)
    ratio = o["median"] / n["median"]
    print(
        table(
            [
                ["design", "samples/s median", "min", "max"],
                ["ours (generate)", f"{o['median']:,.0f}", f"{o['min']:,.0f}", f"{o['max']:,.0f}"],
                [
                    "naive (pandas per row)",
                    f"{n['median']:,.0f}",
                    f"{n['min']:,.0f}",
                    f"{n['max']:,.0f}",
                ],
            ]
        )
    )
    print(f"ratio: {ratio:,.0f}x")
    path = write(
        "backfill",
        {
            "quick": quick,
            "days": days,
            "devices": devices,
            "ours_samples_per_s": o,
            "naive_rows_per_s": n,
            "ratio": ratio,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
