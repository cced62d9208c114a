"""Backfill: the simulation written straight to CSV, as fast as the machine allows.

The rows are the very rows the live pipeline logs for the same seed, settings and time
span (same source, same rendering), with the anomaly windows file beside them. Values
are a pure function of time, so chunks are generated and rendered by one worker process
per core and written in order.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np

from common import render, schema
from common.errors import StartupError
from common.windows import HEADER as WINDOWS_HEADER
from common.windows import WindowTracker, windows_path
from producer.model.roles import DEFAULT_MIX, RoleMix
from producer.series import Series
from producer.sources.sim import SimSource

ROWS_PER_CHUNK = 200_000

_source: SimSource | None = None  # one per worker process


def _start_worker(series: Series, anomaly_rate: float, kinds, durations, roles) -> None:
    global _source
    _source = SimSource(series, anomaly_rate, kinds, anomaly_durations=durations, roles=roles)


def _chunk(first: int, last: int) -> tuple[bytes, schema.Batch]:
    """CSV text of ticks first..last, and the rows the window tracker needs from them:
    the labelled ones and each device's last one."""
    assert _source is not None
    batch = _source.batch(first, last)
    rows = batch.rows
    keep = rows["anomaly_id"] > 0
    keep[-_source.series.devices :] = True
    return render.csv_rows(batch), schema.Batch(np.ascontiguousarray(rows[keep]), batch.precision)


def generate(
    out: Path,
    series: Series,
    ticks: int,
    anomaly_rate: float,
    anomaly_kinds: Iterable[str] | Mapping[str, float],
    progress: Callable[[int], None] = lambda rows: None,
    workers: int | None = None,
    anomaly_durations: Mapping[str, tuple[float, float]] | None = None,
    roles: RoleMix = DEFAULT_MIX,
) -> tuple[int, float]:
    """Write `ticks` ticks of `series` to `out` (and its windows file); return (rows, seconds)."""
    workers = workers or os.cpu_count() or 1
    tracker = WindowTracker()
    chunk = max(1, ROWS_PER_CHUNK // series.devices)
    started = time.perf_counter()
    rows = 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with (
            out.open("wb") as data,
            windows_path(out).open("w") as windows,
            ProcessPoolExecutor(
                workers,
                initializer=_start_worker,
                initargs=(series, anomaly_rate, anomaly_kinds, anomaly_durations, roles),
            ) as pool,
        ):
            data.write(schema.CSV_HEADER.encode() + b"\n")
            windows.write(WINDOWS_HEADER + "\n")
            pending: deque[tuple[Future, int]] = deque()
            firsts = iter(range(0, ticks, chunk))
            for first in firsts:
                pending.append((pool.submit(_chunk, first, min(ticks, first + chunk) - 1), first))
                if len(pending) < 2 * workers:
                    continue
                rows += _write(pending.popleft(), data, windows, tracker, series, ticks, progress)
            while pending:
                rows += _write(pending.popleft(), data, windows, tracker, series, ticks, progress)
            windows.writelines(w.row() for w in tracker.close_all())
    except OSError as exc:
        raise StartupError(f"cannot write {out}: {exc.strerror or exc}") from None
    return rows, time.perf_counter() - started


def _write(job, data, windows, tracker, series, ticks, progress) -> int:
    future, first = job
    text, labels = future.result()
    data.write(text)
    windows.writelines(w.row() for w in tracker.update(labels))
    count = (min(ticks, first + max(1, ROWS_PER_CHUNK // series.devices)) - first) * series.devices
    progress(count)
    return count
