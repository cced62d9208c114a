"""The logger's loop: receive batches, put them through the intake, write what comes out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np

from common import metrics
from common.bus import Subscriber
from common.metrics import Figure
from common.ready import Readiness
from common.shards import GroupIndex, Shard
from delivery.client import CatchupClient
from delivery.intake import Delivery, Intake
from logger.config import LoggerConfig
from logger.sink import LogSink
from logger.tail import last_written

log = logging.getLogger(__name__)


async def run(config: LoggerConfig, stop: asyncio.Event) -> None:
    """Log until `stop` is set, then write what is pending. Raises StartupError on bad settings."""
    with ExitStack() as cleanup:  # runs in reverse order: sockets, then the final flush
        sink = LogSink(config)
        cleanup.callback(_finish, sink)
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
        intake = Intake(
            client,
            delivered=last_written(config.log_path),
            keep=_shard_mask(shard),
            new_series=sink.is_new_series,
        )
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
        caught_up = await intake.catch_up()
        if caught_up is not None:
            _deliver(sink, caught_up)
        ready = Readiness(config.ready_file, "logger")
        ready.announce(
            caught_up=caught_up.refilled if caught_up is not None else None,
            csv=str(config.log_path),
            pub=config.zmq_pub,
            catchup=config.zmq_catchup,
            metrics_port=scrape.port if scrape else 0,
        )
        cleanup.callback(ready.withdraw)
        await _log(config, sink, intake, subscriber, client, stop)


async def _log(
    config: LoggerConfig,
    sink: LogSink,
    intake: Intake,
    subscriber: Subscriber,
    client: CatchupClient,
    stop: asyncio.Event,
) -> None:
    next_stats = time.monotonic() + config.stats_interval
    while not stop.is_set():
        now = time.monotonic()
        wait = min(max(0.0, next_stats - now), intake.retry_s)  # stop ends any wait at once
        if sink.pending_since is not None:
            wait = min(wait, max(0.0, sink.pending_since + config.flush_interval - now))
        received = await subscriber.receive(wait, stop)
        refused = subscriber.take_refused()  # messages met among those received
        for delivery in await intake.take(received, refused):
            _deliver(sink, delivery)
        _deliver(sink, await intake.retry())
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
    _deliver(sink, intake.close())


def _deliver(sink: LogSink, delivery: Delivery) -> None:
    """The series the producers named (a new one starts a new file), then rows to the CSV
    in order, then the gap records (logged)."""
    if delivery.series:
        sink.follow_series(delivery.series)
    for part in delivery.rows:
        sink.write_batch(part)
    for record in delivery.gaps:
        log.warning("gap: %s", record.text())
    sink.write_gaps(delivery.gaps, delivery.precision)


def _finish(sink: LogSink) -> None:
    """On the way out: write everything still pending."""
    sink.close()
    log.info("stopped after writing %d rows", sink.rows_written)


def _figures(sink: LogSink, subscriber: Subscriber, client: CatchupClient) -> list[Figure]:
    return [
        Figure("samples_received", "Samples received from ZeroMQ", subscriber.received, True),
        Figure("rows_written", "CSV rows written", sink.rows_written, True),
        Figure("rows_pending", "Rows waiting to be written", sink.rows_pending),
        Figure("gaps", "Gap records (samples not logged, and why)", sink.gaps_recorded, True),
        Figure("catchup_requests", "Requests for missed samples", client.requests, True),
        Figure(
            "malformed_messages", "Malformed ZeroMQ messages dropped", subscriber.rejected, True
        ),
    ]


def _shard_mask(shard: Shard) -> Callable[[np.ndarray], np.ndarray] | None:
    """Which of some device ids this logger logs (None: all of them)."""
    if shard.count == 1:
        return None
    index = GroupIndex()
    return lambda devices: index.groups(devices) % shard.count == shard.index - 1
