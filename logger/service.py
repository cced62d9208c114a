"""The logger's loop: receive batches, render CSV rows, write them in batches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from common import schema
from common.bus import Subscriber
from common.logs import Every
from logger.config import LoggerConfig
from logger.sink import CsvSink

log = logging.getLogger(__name__)

_POLL_S = 0.2  # longest wait for data before checking the stop event


class Pending:
    """Rendered rows waiting to be written, oldest first, bounded in number of rows."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.chunks: deque[tuple[str, int]] = deque()
        self.rows = 0
        self.since: float | None = None  # monotonic time the oldest pending row arrived
        self.discarded = 0

    def add(self, text: str, rows: int, now: float) -> None:
        if not rows:
            return
        self.chunks.append((text, rows))
        self.rows += rows
        if self.since is None:
            self.since = now
        while self.rows > self.max_rows:
            _, dropped = self.chunks.popleft()
            self.rows -= dropped
            self.discarded += dropped
            log.error("pending rows over %d: discarded %d oldest row(s)", self.max_rows, dropped)

    def take(self) -> tuple[str, int]:
        text = "".join(chunk for chunk, _ in self.chunks)
        return text, self.rows

    def clear(self) -> None:
        self.chunks.clear()
        self.rows = 0
        self.since = None


async def run(config: LoggerConfig, stop: asyncio.Event) -> None:
    """Log until `stop` is set, then write what is pending. Raises StartupError on bad settings."""
    sink = CsvSink(config.csv)
    sink.open()
    try:
        subscriber = Subscriber(config.zmq_pub)
    except BaseException:
        sink.close()
        raise
    log.info("appending to %s from %s", config.csv, config.zmq_pub)
    pending = Pending(config.max_pending_rows)
    write_failed = Every(10.0)
    next_stats = time.monotonic() + config.stats_interval
    try:
        while not stop.is_set():
            now = time.monotonic()
            wait = _POLL_S
            if pending.since is not None:
                wait = min(wait, max(0.0, pending.since + config.flush_interval - now))
            for batch in await subscriber.receive(wait):
                pending.add(schema.to_csv(batch), len(batch), time.monotonic())
            now = time.monotonic()
            if pending.rows >= config.batch_rows or (
                pending.since is not None and now - pending.since >= config.flush_interval
            ):
                _flush(sink, pending, write_failed)
            if now >= next_stats:
                next_stats = now + config.stats_interval
                log.info(
                    "wrote %d rows; received %d samples, %d malformed message(s) dropped",
                    sink.rows_written,
                    subscriber.received,
                    subscriber.rejected,
                )
    finally:
        subscriber.close()
        if pending.rows:
            _flush(sink, pending, Every(0))
        sink.close()
        log.info("stopped after writing %d rows", sink.rows_written)


def _flush(sink: CsvSink, pending: Pending, report: Every) -> None:
    """Write all pending rows in one write; keep them for the next try if the disk refuses."""
    text, rows = pending.take()
    try:
        sink.write(text)
    except OSError as exc:
        if report(time.monotonic()):
            log.error(
                "cannot write %s: %s; holding %d row(s) in memory and retrying",
                sink.path,
                exc.strerror or exc,
                rows,
            )
        pending.since = time.monotonic()  # retry after another flush interval
        return
    sink.rows_written += rows
    pending.clear()
