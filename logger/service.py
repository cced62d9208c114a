"""The logger's loop: receive batches, refill gaps, render CSV rows, write them in batches.

Beside the CSV it keeps the anomaly windows file (`*.windows.csv`) and the gaps file
(`*.gaps.csv`); their rows are written only after the CSV rows they refer to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from contextlib import ExitStack

import numpy as np

from common import metrics, render, schema
from common.bus import Subscriber
from common.logs import Every
from common.metrics import Figure
from common.windows import Window, WindowTracker
from logger.config import LoggerConfig
from logger.outputs import Outputs
from logger.recovery import Gap, HistoryClient, SeqTracker, classify, describe, refill

log = logging.getLogger(__name__)


class Pending:
    """Rows waiting to be written, oldest first, bounded in number of rows.

    Batches are kept as records and rendered together when written: rendering has a fixed
    cost per call (~1 ms), which per message would dominate at a thousand small messages a
    second.
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.batches: deque[schema.Batch] = deque()
        self.rows = 0
        self.since: float | None = None  # monotonic time the oldest pending row arrived
        self.windows: list[Window] = []  # ended with the rows pending now
        self.gaps: list[str] = []  # gap records found with the rows pending now
        self.discarded = 0

    def add(self, batch: schema.Batch, windows: list[Window], now: float) -> None:
        self.windows.extend(windows)
        if not len(batch):
            return
        self.batches.append(batch)
        self.rows += len(batch)
        if self.since is None:
            self.since = now
        while self.rows > self.max_rows:
            dropped = len(self.batches.popleft())
            self.rows -= dropped
            self.discarded += dropped
            log.error("pending rows over %d: discarded %d oldest row(s)", self.max_rows, dropped)

    def take(self) -> tuple[bytes, int]:
        """All pending rows as CSV text, in order (they stay pending until `clear`)."""
        text: list[bytes] = []
        run: list[schema.Batch] = []  # consecutive batches shown at one precision
        for batch in self.batches:
            if run and run[0].precision != batch.precision:
                text.append(_render(run))
                run = []
            run.append(batch)
        text.append(_render(run))
        return b"".join(text), self.rows

    def clear(self) -> None:
        self.batches.clear()
        self.rows = 0
        self.since = None
        self.windows = []
        self.gaps = []


def _render(batches: list[schema.Batch]) -> bytes:
    if not batches:
        return b""
    rows = np.concatenate([b.rows for b in batches]) if len(batches) > 1 else batches[0].rows
    return render.csv_rows(schema.Batch(rows, batches[0].precision))


class Log:
    """Everything the logger keeps for one CSV: rows, windows, gaps, and their order."""

    def __init__(self, config: LoggerConfig) -> None:
        self.config = config
        self.outputs = Outputs(config)
        self.pending = Pending(config.max_pending_rows)
        self.windows = WindowTracker()
        self.seqs = SeqTracker.from_csv(config.csv)
        self.gaps_recorded = 0

    def add(self, batch: schema.Batch) -> None:
        """Queue rows that are new (duplicates were dropped by the seq tracker)."""
        ended = self.windows.update(batch)
        self.pending.add(batch, ended, time.monotonic())

    def record_gaps(self, gaps: list[tuple[Gap, str]], precision: int) -> None:
        for gap, reason in gaps:
            self.gaps_recorded += 1
            log.warning("gap: %s", describe(gap, reason))
            self.pending.gaps.append(gap.row(reason, precision))


async def run(config: LoggerConfig, stop: asyncio.Event) -> None:
    """Log until `stop` is set, then write what is pending. Raises StartupError on bad settings."""
    with ExitStack() as cleanup:  # runs in reverse order: sockets, final flush, files
        book = Log(config)
        cleanup.callback(book.outputs.close)
        cleanup.callback(_finish, book)
        subscriber = Subscriber(config.zmq_pub, security=config.security)
        cleanup.callback(subscriber.close)
        client = HistoryClient(config.zmq_replay, security=config.security)
        cleanup.callback(client.close)
        metrics.serve(
            config.metrics_port, metrics.registry(lambda: _figures(book, subscriber, client))
        )
        log.info("appending to %s from %s", config.csv, config.zmq_pub)
        await _catch_up(book, client)
        await _log(config, book, subscriber, client, stop)


async def _log(
    config: LoggerConfig,
    book: Log,
    subscriber: Subscriber,
    client: HistoryClient,
    stop: asyncio.Event,
) -> None:
    write_failed = Every(10.0)
    next_stats = time.monotonic() + config.stats_interval
    while not stop.is_set():
        pending = book.pending
        now = time.monotonic()
        wait = max(0.0, next_stats - now)  # the stop event ends any wait at once
        if pending.since is not None:
            wait = min(wait, max(0.0, pending.since + config.flush_interval - now))
        for batch in schema.merge(await subscriber.receive(wait, stop)):
            gaps = book.seqs.gaps(batch)
            if gaps:
                await _refill(book, client, gaps, batch)
            book.add(book.seqs.admit(batch))
        now = time.monotonic()
        if (
            pending.rows >= config.batch_rows
            or (pending.since is not None and now - pending.since >= config.flush_interval)
            or (pending.gaps and not pending.rows)
        ):
            _flush(book.outputs, pending, write_failed)
        if now >= next_stats:
            next_stats = now + config.stats_interval
            log.info(
                "wrote %d rows; received %d samples; %d gap(s) recorded; "
                "%d replay request(s); %d malformed message(s) dropped",
                book.outputs.rows_written,
                subscriber.received,
                book.gaps_recorded,
                client.requests,
                subscriber.rejected,
            )


def _finish(book: Log) -> None:
    """On the way out: close open anomaly windows and write everything still pending."""
    book.pending.windows.extend(book.windows.close_all())
    _flush(book.outputs, book.pending, Every(0))
    log.info("stopped after writing %d rows", book.outputs.rows_written)


def _figures(book: Log, subscriber: Subscriber, client: HistoryClient) -> list[Figure]:
    return [
        Figure("samples_received", "Samples received from ZeroMQ", subscriber.received, True),
        Figure("rows_written", "CSV rows written", book.outputs.rows_written, True),
        Figure("rows_pending", "Rows waiting to be written", book.pending.rows),
        Figure("gaps", "Gaps recorded (lost or not produced)", book.gaps_recorded, True),
        Figure("replay_requests", "Requests for missed samples", client.requests, True),
        Figure(
            "malformed_messages", "Malformed ZeroMQ messages dropped", subscriber.rejected, True
        ),
    ]


async def _catch_up(book: Log, client: HistoryClient) -> None:
    """On start: ask the producer for everything after what the CSV already holds."""
    after, newest = book.seqs.after()
    if not after:
        return
    fresh, left, facts = await refill(book.seqs, client, after, newest)
    if facts is None:
        log.info("no answer from the replay endpoint: continuing with live samples")
        return
    for batch in fresh:
        book.add(batch)
    book.record_gaps(left, fresh[0].precision if fresh else schema.SECONDS)
    log.info("recovered %d sample(s) missed while stopped", sum(len(b) for b in fresh))


async def _refill(book: Log, client: HistoryClient, gaps: list[Gap], batch: schema.Batch) -> None:
    """A seq jump: fetch the missing samples, write them before `batch`, record the rest."""
    after = {g.device: g.first - 1 for g in gaps}
    fresh, left, facts = await refill(
        book.seqs, client, after, max(g.after_ms for g in gaps), only=list(after)
    )
    for part in fresh:
        book.add(part)
    left += [(g, classify(g, facts)) for g in book.seqs.gaps(batch)]
    book.record_gaps(left, batch.precision)


def _flush(outputs: Outputs, pending: Pending, report: Every) -> None:
    """Write pending rows in one write, then their windows and gaps; what fails is kept."""
    try:
        if pending.rows:
            data, rows = pending.take()
            outputs.write_rows(data, rows)
            pending.batches.clear()
            pending.rows = 0
        if pending.windows:
            outputs.write_windows("".join(w.row() for w in pending.windows).encode())
            pending.windows = []
        if pending.gaps:
            outputs.write_gaps("".join(pending.gaps).encode())
            pending.gaps = []
        outputs.sync_if_due()
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
