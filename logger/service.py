"""The logger's loop: receive batches, drop duplicates, catch up on gaps, hand rows to the sink."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np

from common import metrics, schema
from common.bus import Subscriber
from common.metrics import Figure
from common.ready import Readiness
from common.shards import GroupIndex, Shard
from logger.catchup import CatchupClient, describe, fill, refill
from logger.config import LoggerConfig
from logger.resume import last_written
from logger.seqs import Gap, SeqTracker, first_seqs
from logger.sink import LogSink
from logger.starts import Met, SeriesStarts, before_first

log = logging.getLogger(__name__)


async def run(config: LoggerConfig, stop: asyncio.Event) -> None:
    """Log until `stop` is set, then write what is pending. Raises StartupError on bad settings."""
    with ExitStack() as cleanup:  # runs in reverse order: sockets, then the final flush
        sink = LogSink(config)
        cleanup.callback(_finish, sink)
        seqs = SeqTracker.resuming(last_written(config.log_path))
        shard = config.shard
        subscriber = Subscriber(
            config.zmq_pub.split(","),
            security=config.security,
            shard=shard,
            keep_refused=True,
        )
        cleanup.callback(subscriber.close)
        client = CatchupClient(config.zmq_catchup, security=config.security)
        cleanup.callback(client.close)
        scrape = metrics.serve(
            config.metrics_port,
            metrics.registry(lambda: _figures(sink, subscriber, client)),
            "--metrics-port (STREAM_LOGGER_METRICS_PORT)",
        )
        if scrape is not None:
            cleanup.callback(scrape.close)
        log.info(
            "appending to %s from %s%s",
            config.log_path,
            config.zmq_pub,
            f" (logger {shard}: device groups {shard.groups})" if shard.count > 1 else "",
        )
        mine = _shard_mask(shard)
        caught_up = await _catch_up(sink, seqs, client, mine)
        ready = Readiness(config.ready_file, "logger")
        ready.announce(
            caught_up=caught_up,
            csv=str(config.log_path),
            pub=config.zmq_pub,
            catchup=config.zmq_catchup,
            metrics_port=scrape.port if scrape else 0,
        )
        cleanup.callback(ready.withdraw)
        starts = SeriesStarts(seqs, client, mine)
        await _log(config, sink, seqs, subscriber, client, starts, stop)


async def _log(
    config: LoggerConfig,
    sink: LogSink,
    seqs: SeqTracker,
    subscriber: Subscriber,
    client: CatchupClient,
    starts: SeriesStarts,
    stop: asyncio.Event,
) -> None:
    next_stats = time.monotonic() + config.stats_interval
    while not stop.is_set():
        now = time.monotonic()
        wait = max(0.0, next_stats - now)  # the stop event ends any wait at once
        if sink.pending_since is not None:
            wait = min(wait, max(0.0, sink.pending_since + config.flush_interval - now))
        if starts.unconfirmed:
            wait = min(wait, starts.retry_s)
        received = schema.merge(await subscriber.receive(wait, stop))
        refused = subscriber.take_refused()  # messages met among those received
        marks = _ranges(refused) if refused is not None else {}
        for batch in received:
            new = seqs.unseen(batch)
            if new:
                met = await starts.meet(new, batch)
                if not await _new_series(sink, seqs, client, starts, batch):
                    _write_met(sink, met, batch.precision)
            gaps = seqs.gaps(batch)
            if gaps:
                await _fill(sink, seqs, client, gaps, batch, marks, starts)
            sink.write_batch(seqs.admit(batch))
        if refused is not None:  # what the samples after them did not already account for
            await _account_refused(sink, seqs, client, starts, refused)
        _record(sink, await starts.retry(), schema.SECONDS)
        now = time.monotonic()
        if sink.flush_due(now):
            sink.flush()
        if now >= next_stats:
            next_stats = now + config.stats_interval
            log.info(
                "wrote %d rows; received %d samples; %d gap(s) recorded; "
                "%d catch-up request(s); %d malformed message(s) dropped",
                sink.rows_written,
                subscriber.received,
                sink.gaps_recorded,
                client.requests,
                subscriber.rejected,
            )
    _record(sink, starts.unanswered(), schema.SECONDS)


def _finish(sink: LogSink) -> None:
    """On the way out: write everything still pending."""
    sink.close()
    log.info("stopped after writing %d rows", sink.rows_written)


def _figures(sink: LogSink, subscriber: Subscriber, client: CatchupClient) -> list[Figure]:
    return [
        Figure("samples_received", "Samples received from ZeroMQ", subscriber.received, True),
        Figure("rows_written", "CSV rows written", sink.rows_written, True),
        Figure("rows_pending", "Rows waiting to be written", sink.rows_pending),
        Figure("gaps", "Gaps recorded (lost or not produced)", sink.gaps_recorded, True),
        Figure("catchup_requests", "Requests for missed samples", client.requests, True),
        Figure(
            "malformed_messages", "Malformed ZeroMQ messages dropped", subscriber.rejected, True
        ),
    ]


async def _account_refused(
    sink: LogSink, seqs: SeqTracker, client: CatchupClient, starts: SeriesStarts, rows: np.ndarray
) -> None:
    """Samples in messages that could not be accepted: fetched from the producer's history
    if it holds them, else recorded as 'refused' (published, but not valid samples)."""
    last = seqs.last
    gaps, unseen = [], []
    for device, (first, final, newest_ms) in _ranges(rows).items():
        written = last.get(schema.device_bytes(device))
        if written is None:
            unseen.append((Gap(device, first, final, newest_ms, newest_ms), "refused"))
            starts.unconfirmed.setdefault(device, (first, newest_ms))  # and what came before?
        elif final > written[0]:
            gaps.append(Gap(device, max(first, written[0] + 1), final, written[1], newest_ms))
    left = list(unseen)
    if gaps:
        fresh, missing = await fill(seqs, client, gaps, schema.Batch(schema.empty_rows(0)))
        for part in fresh:
            sink.write_batch(part)
        left += [(g, "refused" if r == "lost" else r) for g, r in missing]
    for gap, _ in left:  # accounted for: a later sample must not report them again
        if seqs.last.get(gap.device.encode(), (-1, 0))[0] < gap.last:
            seqs.remember(gap.device.encode(), gap.last, gap.before_ms)
    _record(sink, left, schema.SECONDS)


def _ranges(rows: np.ndarray) -> dict[str, tuple[int, int, int]]:
    """Device -> (first seq, last seq, newest timestamp) of some rows."""
    out: dict[str, tuple[int, int, int]] = {}
    for device, seq, ts in zip(
        rows["device"].tolist(), rows["seq"].tolist(), rows["ts_ms"].tolist(), strict=True
    ):
        name = schema.device_name(device)
        first, final, newest = out.get(name, (seq, seq, ts))
        out[name] = (min(first, seq), max(final, seq), max(newest, ts))
    return out


def _record(sink: LogSink, gaps: list[tuple[Gap, str]], precision: int) -> None:
    for gap, reason in gaps:
        log.warning("gap: %s", describe(gap, reason))
    sink.write_gaps(gaps, precision)


def _shard_mask(shard: Shard) -> Callable[[np.ndarray], np.ndarray] | None:
    """Which of some device ids this logger logs (None: all of them)."""
    if shard.count == 1:
        return None
    index = GroupIndex()
    return lambda devices: index.groups(devices) % shard.count == shard.index - 1


async def _catch_up(
    sink: LogSink,
    seqs: SeqTracker,
    client: CatchupClient,
    mine: Callable[[np.ndarray], np.ndarray] | None,
) -> int | None:
    """On start: ask the producer for everything after what the CSV already holds.

    Returns how many samples came back (None: there was nothing to ask, or no answer)."""
    after, newest = seqs.after()
    if not after:
        return None
    fresh, left, facts = await refill(seqs, client, after, newest, keep=mine)
    if facts is None:
        log.info("no answer from the catch-up endpoint: continuing with live samples")
        return None
    if sink.follow_series(facts.series):
        seqs.forget()  # a new file: its devices are met afresh as samples come
        return None
    newcomers = {d: f for d, f in first_seqs(fresh).items() if d not in after}
    left += before_first(newcomers, facts)  # devices this log has not held before
    for batch in fresh:
        sink.write_batch(batch)
    _record(sink, left, fresh[0].precision if fresh else schema.SECONDS)
    count = sum(len(b) for b in fresh)
    log.info("caught up on %d sample(s) missed while stopped", count)
    return count


def _write_met(sink: LogSink, met: Met, precision: int) -> None:
    for part in met.rows:
        sink.write_batch(part)
    _record(sink, met.gaps, precision)


async def _new_series(
    sink: LogSink,
    seqs: SeqTracker,
    client: CatchupClient,
    starts: SeriesStarts,
    batch: schema.Batch,
) -> bool:
    """If the producers' last answer names another series than the file's: a new file
    begins (LogSink.follow_series), the old seqs are forgotten and the batch's devices are
    met afresh, as in a new log (what is held of them, what came before). True if so."""
    if not sink.follow_series(client.series):
        return False
    seqs.forget()
    starts.unconfirmed.clear()
    new = seqs.unseen(batch)
    if new:
        _write_met(sink, await starts.meet(new, batch), batch.precision)
    return True


async def _fill(
    sink: LogSink,
    seqs: SeqTracker,
    client: CatchupClient,
    gaps: list[Gap],
    batch: schema.Batch,
    refused: dict[str, tuple[int, int, int]],
    starts: SeriesStarts,
) -> None:
    """A seq jump: fetch the missing samples, write them before `batch`, record the rest
    ('refused' rather than 'lost' where they were in messages this logger refused). A jump
    into another series starts a new file instead (`_new_series`)."""
    fresh, left = await fill(seqs, client, gaps, batch)
    if await _new_series(sink, seqs, client, starts, batch):
        return
    for part in fresh:
        sink.write_batch(part)
    _record(sink, [(g, _refused_or(r, g, refused)) for g, r in left], batch.precision)


def _refused_or(reason: str, gap: Gap, refused: dict[str, tuple[int, int, int]]) -> str:
    first, last, _ = refused.get(gap.device, (-1, -2, 0))
    return "refused" if reason == "lost" and first <= gap.first and gap.last <= last else reason
