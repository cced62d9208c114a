"""Backfill: the simulation written straight to CSV, as fast as the machine allows.

The rows are the very rows the live pipeline logs for the same seed, settings and time
span (same source, same rendering), with the anomaly windows file beside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from common import render, schema
from common.errors import StartupError
from common.windows import HEADER as WINDOWS_HEADER
from common.windows import WindowTracker, windows_path
from producer.series import Series
from producer.sim import SimSource

ROWS_PER_CHUNK = 200_000


def generate(
    out: Path,
    series: Series,
    ticks: int,
    anomaly_rate: float,
    anomaly_kinds: tuple[str, ...],
    progress: Callable[[int], None] = lambda rows: None,
) -> tuple[int, float]:
    """Write `ticks` ticks of `series` to `out` (and its windows file); return (rows, seconds)."""
    source = SimSource(series, anomaly_rate, anomaly_kinds)
    tracker = WindowTracker()
    chunk = max(1, ROWS_PER_CHUNK // series.devices)
    started = time.perf_counter()
    rows = 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as data, windows_path(out).open("w") as windows:
            data.write(schema.CSV_HEADER.encode() + b"\n")
            windows.write(WINDOWS_HEADER + "\n")
            for first in range(0, ticks, chunk):
                batch = source.batch(first, min(ticks, first + chunk) - 1)
                data.write(render.csv_rows(batch))
                windows.writelines(w.row() for w in tracker.update(batch))
                rows += len(batch)
                progress(len(batch))
            windows.writelines(w.row() for w in tracker.close_all())
    except OSError as exc:
        raise StartupError(f"cannot write {out}: {exc.strerror or exc}") from None
    return rows, time.perf_counter() - started
