"""Backfill: the simulation written straight to CSV or Parquet, as fast as the machine allows.

The rows are the very rows the live pipeline logs for the same seed, settings and time
span (same source; CSV with the same rendering, Parquet with the same values typed),
with the anomaly windows file beside them. Values are a pure function of time, so
chunks are generated and encoded by one worker process per core and written in order.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from common import schema
from common.errors import StartupError
from common.windows import HEADER as WINDOWS_HEADER
from common.windows import StartOrder, WindowTracker, windows_path
from producer import outputs
from producer.model.roles import DEFAULT_MIX, RoleMix
from producer.model.scenario import Scenario
from producer.sources.series import Series
from producer.sources.sim import SimSource

ROWS_PER_CHUNK = 200_000

_source: SimSource | None = None  # one per worker process
_encode: Callable[[schema.Batch], Any] | None = None


def _start_worker(
    series: Series, anomaly_rate: float, kinds, durations, roles, scenario, fmt: str
) -> None:
    global _source, _encode
    _source = SimSource(
        series, anomaly_rate, kinds, anomaly_durations=durations, roles=roles, scenario=scenario
    )
    _encode = outputs.encoder(fmt)


def _chunk(first: int, last: int) -> tuple[Any, schema.Batch]:
    """Ticks first..last encoded for the file, and the rows the window tracker needs from
    them: the labelled ones (anomalies and events) and each device's last one."""
    assert _source is not None and _encode is not None
    batch = _source.batch(first, last)
    rows = batch.rows
    keep = rows["anomaly_id"] > 0
    if _source.timeline is not None:
        keep |= rows["event"] > 0
    keep[-_source.series.devices :] = True
    return _encode(batch), batch.with_rows(np.ascontiguousarray(rows[keep]))


@contextmanager
def open_files(
    out: Path, fmt: str = "csv", compression: str = outputs.COMPRESSION
) -> Iterator[tuple[outputs.Output, TextIO]]:
    """The data file and its windows file, created (replaced) now; StartupError, naming
    `out`, if they cannot be created or written, now or later."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with (
            closing(outputs.open_output(out, fmt, compression)) as data,
            windows_path(out).open("w") as windows,
        ):
            windows.write(WINDOWS_HEADER + "\n")
            yield data, windows
    except OSError as exc:
        raise StartupError(f"cannot write {out}: {_reason(exc, out)}") from None


def _reason(exc: OSError, out: Path) -> str:
    """The system's words for the error (pyarrow's own are long), and the path it concerns
    when that is not `out` (a file where a folder should be)."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.filename is not None and Path(exc.filename) != out:
        return f"{exc.filename}: {reason}"
    return reason


def plan(
    devices: int, rate: float, duration_s: float, seed: int | None, start_ms: int | None
) -> tuple[Series, int]:
    """The series a backfill of `duration_s` simulated seconds covers, and its tick count:
    from `start_ms` (None: the span that ends now, from a whole second) with `seed` (None: a
    random one, which the series keeps)."""
    if seed is None:
        seed = secrets.randbits(32)
    if start_ms is None:
        start_ms = math.floor(time.time() - duration_s) * 1000
    series = Series(
        seed=seed,
        devices=devices,
        rate=rate,
        origin_ms=start_ms,
        wall_origin_ms=start_ms,
        seq_base=0,
    )
    return series, math.ceil(duration_s * rate)


def run(
    files: tuple[outputs.Output, TextIO],
    series: Series,
    ticks: int,
    anomaly_rate: float,
    anomaly_kinds: Iterable[str] | Mapping[str, float],
    progress: Callable[[int], None] = lambda rows: None,
    workers: int | None = None,
    anomaly_durations: Mapping[str, tuple[float, float]] | None = None,
    roles: RoleMix = DEFAULT_MIX,
    scenario: Scenario | None = None,
) -> int:
    """Write `ticks` ticks of `series` to `files` (from `open_files`, or an ArrowTable and any
    text file for the windows); return the number of samples written. A `scenario` gives the
    fleet (`series.devices` must be its size)."""
    data, windows = files
    fmt = data.FORMAT
    workers = workers or os.cpu_count() or 1
    tracker = WindowTracker()
    order = StartOrder()  # the windows file in order of start
    out = (data, windows, tracker, order)
    chunk = max(1, ROWS_PER_CHUNK // series.devices)
    rows = 0
    with ProcessPoolExecutor(
        workers,
        initializer=_start_worker,
        initargs=(series, anomaly_rate, anomaly_kinds, anomaly_durations, roles, scenario, fmt),
    ) as pool:
        pending: deque[tuple[Future, int]] = deque()
        for first in range(0, ticks, chunk):
            pending.append((pool.submit(_chunk, first, min(ticks, first + chunk) - 1), first))
            if len(pending) < 2 * workers:
                continue
            rows += _write(pending.popleft(), out, series, ticks, progress)
        while pending:
            rows += _write(pending.popleft(), out, series, ticks, progress)
    windows.writelines(w.row() for w in order.add(tracker.close_all(), tracker))
    return rows


def generate(
    out: Path,
    series: Series,
    ticks: int,
    anomaly_rate: float,
    anomaly_kinds: Iterable[str] | Mapping[str, float],
    progress: Callable[[int], None] = lambda rows: None,
    workers: int | None = None,
    fmt: str = "csv",
    compression: str = outputs.COMPRESSION,
    anomaly_durations: Mapping[str, tuple[float, float]] | None = None,
    roles: RoleMix = DEFAULT_MIX,
    scenario: Scenario | None = None,
) -> tuple[int, float]:
    """Write `ticks` ticks of `series` to `out` in `fmt` (and the windows file beside it);
    return (rows, seconds), the seconds from creating the files to closing them."""
    started = time.perf_counter()
    with open_files(out, fmt, compression) as files:
        rows = run(
            files,
            series,
            ticks,
            anomaly_rate,
            anomaly_kinds,
            progress,
            workers,
            anomaly_durations,
            roles,
            scenario,
        )
    return rows, time.perf_counter() - started


def _write(job, out, series, ticks, progress) -> int:
    data, windows, tracker, order = out
    future, first = job
    encoded, labels = future.result()
    data.write(encoded)
    windows.writelines(w.row() for w in order.add(tracker.update(labels), tracker))
    count = (min(ticks, first + max(1, ROWS_PER_CHUNK // series.devices)) - first) * series.devices
    progress(count)
    return count
