"""The producer's loop: wait for the next sample's deadline, take what is due, publish."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import ExitStack

from common import metrics
from common.bus import Publisher
from common.metrics import Figure
from common.ready import Readiness
from common.signals import wait_or_stop
from producer.catchup.history import History
from producer.catchup.server import CatchupServer
from producer.config import ProducerConfig, for_instance
from producer.control.server import ControlServer
from producer.controller import Controller
from producer.formation import learn, needs_formation_series
from producer.gate import Gate
from producer.sources import Source
from producer.sources.series import Series, identity
from producer.startup import open_source

log = logging.getLogger(__name__)

_MIN_SLEEP_S = 0.001  # at very high tick rates, publish several ticks per wake-up
# The event loop wakes timers up to ~1.5 ms late (epoll counts whole milliseconds), so the
# last stretch before a deadline is slept with time.sleep, which is accurate to ~0.1 ms.
_PRECISE_S = 0.002
# Behind schedule, one turn of the loop publishes at most this much of it: a SIGTERM took
# 4.9 s to take effect at 1000 devices x 1 kHz when a turn took all that was due at once.
_TAKE_S = 0.05


async def run(config: ProducerConfig, stop: asyncio.Event) -> None:
    """Publish until `stop` is set. Raises StartupError if the source or an endpoint is unusable."""
    given, config = config, for_instance(config)
    with ExitStack() as cleanup:  # closes, in reverse order, whatever was opened
        history = History(config.history_s, config.history_bytes)
        publisher = Publisher(config.zmq_pub, security=config.security)
        cleanup.callback(publisher.close)
        catchup_server = CatchupServer(config.zmq_catchup, history, config.security)
        cleanup.callback(catchup_server.close)
        gate = Gate(history)
        formation = None
        if needs_formation_series(given):
            formation = await learn(given, stop)  # producer 1's endpoints: the settings given
            if formation is None:
                return  # stopped while waiting for producer 1
        source = open_source(config, time.time() * 1000, gate.refuse, formation)
        _prefetch(source, gate)
        series = getattr(source, "series", None)  # an idle replay or live producer has none
        history.series_first = series.seq_base if series is not None else None
        history.series = _identity(given, series)
        controller = Controller(config, source)
        control_server = ControlServer(config.zmq_control, controller, config.security)
        cleanup.callback(control_server.close)
        scrape = metrics.serve(
            config.metrics_port,
            metrics.registry(lambda: _figures(controller, history, gate)),
            "--metrics-port (STREAM_PRODUCER_METRICS_PORT)",
        )
        if scrape is not None:
            cleanup.callback(scrape.close)
        log.info(
            "%s; publishing on %s, catch-up on %s, control on %s",
            source.describe(),
            publisher.endpoint,
            catchup_server.endpoint,
            control_server.endpoint,
        )
        ready = Readiness(config.ready_file, "producer")
        ready.announce(
            pub=publisher.endpoint,
            catchup=catchup_server.endpoint,
            control=control_server.endpoint,
            metrics_port=scrape.port if scrape else 0,
        )
        cleanup.callback(ready.withdraw)
        servers = [asyncio.create_task(s.serve(stop)) for s in (catchup_server, control_server)]
        try:
            await _publish(config, source, publisher, history, gate, controller, stop)
        finally:
            stop.set()
            await asyncio.gather(*servers)
        log.info(
            "stopped after publishing %d samples; last seq %d",
            controller.published,
            controller.last_seq,
        )


def _identity(config: ProducerConfig, series: Series | None) -> dict | None:
    """What the catch-up answers say this producer publishes (producer.sources.series.identity)."""
    if series is None:
        return None
    host = None
    if config.source == "live":
        from producer.sources.live import host_device_name

        host = host_device_name()
    replay = str(config.replay_file) if config.replay_file is not None else None
    return identity(series, replay, host)


def _prefetch(source: Source, gate: Gate) -> None:
    """Let the source generate ahead, and the gate check at once what it generated."""
    block = source.prefetch()
    if block is not None:
        gate.vouch(block)


async def _sleep_until(due: float, stop: asyncio.Event) -> bool:
    """Sleep until `due` (epoch s), or less if stopped; True if stopped.

    Always yields to the event loop once, so the catch-up and control servers are served
    even when every tick is already due.
    """
    delay = due - time.time()
    coarse = delay - _PRECISE_S
    if await wait_or_stop(stop, max(coarse, _MIN_SLEEP_S) if coarse > 0 else 0):
        return True
    left = due - time.time()
    if 0 < left <= _PRECISE_S:
        time.sleep(left)  # blocks the loop for at most _PRECISE_S: the deadline comes first
    return stop.is_set()


def _horizon_ms(due: float, max_lag_s: float) -> float:
    """How far to take samples this turn: up to now, but when behind (and not so far behind
    that the source skips ahead), at most _TAKE_S past the first due, so that the loop
    turns, and hears a stop, every few tens of milliseconds however far behind it is."""
    now = time.time()
    if now - due > max_lag_s:
        return now * 1000
    return min(now, due + _TAKE_S) * 1000


def _figures(controller: Controller, history: History, gate: Gate) -> list[Figure]:
    return [
        Figure("samples_published", "Samples published", controller.published, True),
        Figure("last_seq", "Seq of the last sample published", controller.last_seq),
        Figure("paused", "1 while paused by ctl", int(controller.paused)),
        Figure("history_rows", "Samples kept for catch-up", history.rows),
        Figure("catchup_requests", "Catch-up requests answered", history.requests, True),
        Figure(
            "invalid_rows", "Samples or input rows not published: not valid", gate.refused, True
        ),
    ]


async def _publish(
    config: ProducerConfig,
    source: Source,
    publisher: Publisher,
    history: History,
    gate: Gate,
    controller: Controller,
    stop: asyncio.Event,
) -> None:
    """Publish on schedule until stopped; skipped ticks are recorded as not produced, samples
    that are not valid are withheld (see producer.gate)."""
    next_stats = time.monotonic() + config.stats_interval
    while True:
        due = source.next_due_ms() / 1000.0
        if due == float("inf") or controller.paused:
            due = time.time() + (0.1 if controller.paused else 3600.0)
        if await _sleep_until(due, stop):
            return
        if controller.paused:
            continue
        for batch in source.take(_horizon_ms(due, config.max_lag)):
            first = int(batch.rows["seq"][0])
            if 0 <= controller.last_seq < first - 1 and config.source != "replay":
                history.not_produced(controller.last_seq + 1, first - 1)
            controller.last_seq = int(batch.rows["seq"][-1])
            batch = gate.admit(batch)
            if not len(batch):
                continue
            publisher.publish(batch)
            history.add(batch)
            controller.published += len(batch)
        _prefetch(source, gate)
        if time.monotonic() >= next_stats:
            next_stats += config.stats_interval
            log.info(
                "published %d samples; last seq %d; %d not valid (withheld)",
                controller.published,
                controller.last_seq,
                gate.refused,
            )
