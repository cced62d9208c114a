"""The logger's loop: receive batches, render CSV rows, write them in batches.

Beside the CSV it keeps the anomaly windows file (`*.windows.csv`); a window is written
only after the rows it spans are in the CSV.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from common import render, schema
from common.bus import Subscriber
from common.logs import Every
from common.windows import HEADER as WINDOWS_HEADER
from common.windows import Window, WindowTracker, windows_path
from logger.config import LoggerConfig
from logger.sink import CsvSink

log = logging.getLogger(__name__)

_POLL_S = 0.2  # longest wait for data before checking the stop event


class Pending:
    """Rendered rows waiting to be written, oldest first, bounded in number of rows."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.chunks: deque[tuple[bytes, int]] = deque()
        self.rows = 0
        self.since: float | None = None  # monotonic time the oldest pending row arrived
        self.windows: list[Window] = []  # ended with the rows pending now
        self.discarded = 0

    def add(self, data: bytes, rows: int, windows: list[Window], now: float) -> None:
        self.windows.extend(windows)
        if not rows:
            return
        self.chunks.append((data, rows))
        self.rows += rows
        if self.since is None:
            self.since = now
        while self.rows > self.max_rows:
            _, dropped = self.chunks.popleft()
            self.rows -= dropped
            self.discarded += dropped
            log.error("pending rows over %d: discarded %d oldest row(s)", self.max_rows, dropped)

    def take(self) -> tuple[bytes, int]:
        return b"".join(chunk for chunk, _ in self.chunks), self.rows

    def clear(self) -> None:
        self.chunks.clear()
        self.rows = 0
        self.since = None
        self.windows = []


class Outputs:
    """The CSV and its windows file, opened and closed together."""

    def __init__(self, config: LoggerConfig) -> None:
        self.csv = CsvSink(config.csv)
        self.windows = CsvSink(windows_path(config.csv), header=WINDOWS_HEADER)
        self.csv.open()
        try:
            self.windows.open()
        except BaseException:
            self.csv.close()
            raise

    def close(self) -> None:
        self.windows.close()
        self.csv.close()


async def run(config: LoggerConfig, stop: asyncio.Event) -> None:
    """Log until `stop` is set, then write what is pending. Raises StartupError on bad settings."""
    outputs = Outputs(config)
    try:
        subscriber = Subscriber(config.zmq_pub)
    except BaseException:
        outputs.close()
        raise
    log.info("appending to %s from %s", config.csv, config.zmq_pub)
    pending = Pending(config.max_pending_rows)
    tracker = WindowTracker()
    write_failed = Every(10.0)
    next_stats = time.monotonic() + config.stats_interval
    try:
        while not stop.is_set():
            now = time.monotonic()
            wait = _POLL_S
            if pending.since is not None:
                wait = min(wait, max(0.0, pending.since + config.flush_interval - now))
            for batch in schema.merge(await subscriber.receive(wait)):
                ended = tracker.update(batch)
                pending.add(render.csv_rows(batch), len(batch), ended, time.monotonic())
            now = time.monotonic()
            if pending.rows >= config.batch_rows or (
                pending.since is not None and now - pending.since >= config.flush_interval
            ):
                _flush(outputs, pending, write_failed)
            if now >= next_stats:
                next_stats = now + config.stats_interval
                log.info(
                    "wrote %d rows; received %d samples, %d malformed message(s) dropped",
                    outputs.csv.rows_written,
                    subscriber.received,
                    subscriber.rejected,
                )
    finally:
        subscriber.close()
        pending.windows.extend(tracker.close_all())
        _flush(outputs, pending, Every(0))
        outputs.close()
        log.info("stopped after writing %d rows", outputs.csv.rows_written)


def _flush(outputs: Outputs, pending: Pending, report: Every) -> None:
    """Write pending rows in one write, then the windows they close; keep both on failure."""
    data, rows = pending.take()
    try:
        if rows:
            outputs.csv.write(data)
            outputs.csv.rows_written += rows
            pending.chunks.clear()
            pending.rows = 0
        if pending.windows:
            outputs.windows.write("".join(w.row() for w in pending.windows).encode())
    except OSError as exc:
        if report(time.monotonic()):
            log.error(
                "cannot write %s: %s; holding %d row(s) in memory and retrying",
                outputs.csv.path,
                exc.strerror or exc,
                pending.rows,
            )
        pending.since = time.monotonic()  # retry after another flush interval
        return
    pending.clear()
