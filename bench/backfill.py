"""Backfill throughput: `python -m producer generate` to CSV and to Parquet, same run.

    python bench/backfill.py [--quick] [--days 7] [--devices 10] [--runs 3]

Ours: the model with labels and windows, encoded in batches on every core, written to
CSV and to Parquet (each of zstd, snappy and no compression), the runs interleaved so
the machine's load falls on all alike. Floor: the model alone in the same worker
processes and chunks, nothing encoded or written. Baseline: uniform random samples appended to the
CSV one row at a time with a one-row pandas DataFrame, as the spec's simulator did.
All write real files; the ratios are per sample.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import summary, table, write  # noqa: E402
from producer import backfill  # noqa: E402
from producer.backfill import generate  # noqa: E402
from producer.model.anomalies import SIMULATED_KINDS  # noqa: E402
from producer.model.roles import DEFAULT_MIX  # noqa: E402
from producer.outputs import COMPRESSION, COMPRESSIONS  # noqa: E402
from producer.sources.series import Series  # noqa: E402


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


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the backfill's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def ours(
    path: Path, days: float, devices: int, fmt: str, compression: str
) -> tuple[float, float, int]:
    """Samples per second of a backfill at 1 Hz, its CPU microseconds per sample (all
    processes: what other load on the machine changes least), and the file's size."""
    series = Series(
        seed=1, devices=devices, rate=1.0, origin_ms=1_754_265_600_000, wall_origin_ms=0, seq_base=0
    )
    cpu = _cpu_s()
    rows, seconds = generate(
        path, series, int(days * 86_400), 4.0, SIMULATED_KINDS, fmt=fmt, compression=compression
    )
    cpu_us = (_cpu_s() - cpu) / rows * 1e6
    size = path.stat().st_size
    path.unlink()
    return rows / seconds, cpu_us, size


def _model_chunk(first: int, last: int) -> int:
    """In a backfill worker: the chunk's samples generated, and dropped."""
    assert backfill._source is not None
    return len(backfill._source.batch(first, last))


def model_only(days: float, devices: int) -> tuple[float, float]:
    """The floor: samples per second, and CPU us per sample, of the model alone, in the
    backfill's own worker processes and chunks, with nothing encoded or written."""
    series = Series(
        seed=1, devices=devices, rate=1.0, origin_ms=1_754_265_600_000, wall_origin_ms=0, seq_base=0
    )
    ticks = int(days * 86_400)
    chunk = max(1, backfill.ROWS_PER_CHUNK // devices)
    workers = os.cpu_count() or 1
    args = (series, 4.0, SIMULATED_KINDS, None, DEFAULT_MIX, None, "csv")
    cpu, began = _cpu_s(), time.perf_counter()
    with ProcessPoolExecutor(workers, initializer=backfill._start_worker, initargs=args) as pool:
        firsts = range(0, ticks, chunk)
        rows = sum(pool.map(_model_chunk, firsts, [min(ticks, f + chunk) - 1 for f in firsts]))
    seconds = time.perf_counter() - began
    return rows / seconds, (_cpu_s() - cpu) / rows * 1e6


def _row(name: str, s: dict[str, float], *extra: str) -> list[str]:
    return [name, f"{s['median']:,.0f}", f"{s['min']:,.0f}", f"{s['max']:,.0f}", *extra]


@click.command()
@click.option("--quick", is_flag=True, help="Smaller runs (a smoke test).")
@click.option("--days", default=7.0, show_default=True, help="Simulated days at 1 Hz.")
@click.option("--devices", default=10, show_default=True)
@click.option("--runs", default=3, show_default=True)
def main(quick: bool, days: float, devices: int, runs: int) -> None:
    naive_s = 3.0
    if quick:
        days, runs, naive_s = 0.05, 1, 0.5
    kinds = [("csv", COMPRESSION)] + [("parquet", c) for c in COMPRESSIONS]
    rates: dict[tuple[str, str], list[float]] = {k: [] for k in kinds}
    cpus: dict[tuple[str, str], list[float]] = {k: [] for k in kinds}
    sizes: dict[tuple[str, str], int] = {}
    floor_rates: list[float] = []
    floor_cpus: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            rate, cpu = model_only(days, devices)
            floor_rates.append(rate)
            floor_cpus.append(cpu)
            for fmt, compression in kinds:
                path = Path(tmp) / f"ours{i}.{fmt}"
                rate, cpu, size = ours(path, days, devices, fmt, compression)
                rates[fmt, compression].append(rate)
                cpus[fmt, compression].append(cpu)
                sizes[fmt, compression] = size
        naive_rates = [naive(Path(tmp) / f"naive{i}.csv", naive_s) for i in range(runs)]
    samples = int(days * 86_400) * devices
    csv = summary(rates["csv", COMPRESSION])
    parquet = summary(rates["parquet", COMPRESSION])
    n = summary(naive_rates)
    rows = [["design", "samples/s median", "min", "max", "CPU us/sample", "bytes/sample"]]
    for fmt, compression in kinds:
        name = "generate -> CSV"
        if fmt == "parquet":
            chosen = " (default)" if compression == COMPRESSION else ""
            name = f"generate -> Parquet, {compression}{chosen}"
        rows.append(
            _row(
                name,
                summary(rates[fmt, compression]),
                f"{summary(cpus[fmt, compression])['median']:.2f}",
                f"{sizes[fmt, compression] / samples:.1f}",
            )
        )
    floor = summary(floor_rates)
    rows.append(
        _row("floor: the model alone, no file", floor, f"{summary(floor_cpus)['median']:.2f}", "")
    )
    rows.append(_row("naive (pandas per row) -> CSV", n, "", ""))
    print(f"{days:g} days x {devices} devices at 1 Hz: {samples:,} samples per run, {runs} runs")
    print(table(rows))
    print(f"Parquet ({COMPRESSION}) / CSV: {parquet['median'] / csv['median']:.2f}x")
    print(
        f"CSV / floor: {csv['median'] / floor['median']:.2f}x, "
        f"Parquet / floor: {parquet['median'] / floor['median']:.2f}x"
    )
    print(f"CSV / naive: {csv['median'] / n['median']:,.0f}x")
    path = write(
        "backfill",
        {
            "quick": quick,
            "days": days,
            "devices": devices,
            "samples": samples,
            "csv_samples_per_s": csv,
            "parquet_samples_per_s": parquet,
            "parquet_compression": COMPRESSION,
            "parquet_over_csv": parquet["median"] / csv["median"],
            "bytes_per_sample": {
                "csv": sizes["csv", COMPRESSION] / samples,
                **{c: sizes["parquet", c] / samples for c in COMPRESSIONS},
            },
            "parquet_by_compression": {c: summary(rates["parquet", c]) for c in COMPRESSIONS},
            "cpu_us_per_sample": {
                "csv": summary(cpus["csv", COMPRESSION]),
                **{c: summary(cpus["parquet", c]) for c in COMPRESSIONS},
            },
            "floor_model_only_samples_per_s": floor,
            "floor_model_only_cpu_us_per_sample": summary(floor_cpus),
            "naive_rows_per_s": n,
            "csv_over_naive": csv["median"] / n["median"],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
