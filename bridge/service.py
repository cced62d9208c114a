"""The bridge's loop: receive samples, put them through the intake (delivery.intake), hand
what comes out to the broker through the outbox, and record what cannot be delivered."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack, suppress

from bridge.broker import Backoff, Sink, open_sink
from bridge.config import BridgeConfig
from bridge.outbox import Outbox
from bridge.state import StateFile
from common import metrics, render, schema
from common.bus import Subscriber
from common.csvfile import CsvFile
from common.logs import Every
from common.metrics import Figure
from common.ready import Readiness
from delivery.client import CatchupClient
from delivery.gaps import GapRecord, gaps_file, rows, summary
from delivery.intake import Delivery, Intake, Positions
from delivery.reasons import Reason

log = logging.getLogger(__name__)


async def run(config: BridgeConfig, stop: asyncio.Event) -> None:
    """Bridge until `stop` is set, then publish what is held for `stop_grace` seconds and
    record the rest as gaps. Raises StartupError on what retrying cannot fix."""
    render.prefer_compiled_json()  # a bridge's rate rests on rendering (see common.render)
    async with AsyncExitStack() as cleanup:
        gaps = gaps_file(config.gaps_file, "bridge", "--gaps-file")
        gaps.open()
        cleanup.callback(gaps.close)
        state = None
        if config.target.kind == "mqtt" and config.state_file is not None:
            state = StateFile(config.state_file)  # JetStream is asked instead
            state.open()
            cleanup.callback(state.close)
        log.info("connecting to %s", config.target.url)
        sink = await open_sink(config, stop)
        if sink is None:
            return
        cleanup.push_async_callback(sink.close)
        subscriber = Subscriber(
            config.zmq_pub.split(","),
            security=config.security,
            keep_refused=True,
            shard=config.shard,
        )
        cleanup.callback(subscriber.close)
        client = CatchupClient(config.zmq_catchup, security=config.security)
        cleanup.callback(client.close)
        bridge = Bridge(config, sink, subscriber, client, gaps, state)
        scrape = metrics.serve(
            config.metrics_port,
            metrics.registry(bridge.figures),
            "--metrics-port (STREAM_BRIDGE_METRICS_PORT)",
        )
        if scrape is not None:
            cleanup.callback(scrape.close)
        ready = Readiness(config.ready_file, "bridge")
        ready.announce(
            to=sink.url,
            pub=config.zmq_pub,
            catchup=config.zmq_catchup,
            gaps=str(config.gaps_file),
            state=str(config.state_file) if state else "",
            metrics_port=scrape.port if scrape else 0,
        )
        cleanup.callback(ready.withdraw)
        log.info("bridging %s to %s", config.zmq_pub, sink.url)
        await bridge.run(stop)


class Bridge:
    """The state of one bridge: where each device is, what is held, what was counted."""

    def __init__(
        self,
        config: BridgeConfig,
        sink: Sink,
        subscriber: Subscriber,
        client: CatchupClient,
        gaps_file: CsvFile,
        state: StateFile | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.subscriber = subscriber
        self.client = client
        self.gaps_file = gaps_file
        self.state = state
        self._saved = state.saved if state else {}  # where the last run got to (MQTT)
        self.intake = Intake(client, place=self._last_delivered)
        self.outbox = Outbox(
            config.max_unsent,
            config.batch_max if config.batch else 1,
            blocks=getattr(sink, "takes_blocks", False),  # a sink that needs no message ids
        )
        self._precision = schema.SECONDS  # of the samples last received
        self._closing = asyncio.Event()
        self.refilled = 0
        self.published = 0  # samples sent (a retry counts again)
        self.acknowledged = 0
        self.gaps_recorded = 0
        self.unsent_at_stop = 0
        self._last_ack = time.monotonic()
        self._warn = Every(5.0)
        self._taking = 0  # samples received that the intake is still working on

    async def run(self, stop: asyncio.Event) -> None:
        publisher = asyncio.create_task(self._publish())
        next_stats = time.monotonic() + self.config.stats_interval
        next_save = time.monotonic() + self.config.state_interval
        try:
            while not stop.is_set():
                wait = max(0.0, min(next_stats, next_save) - time.monotonic())
                received = await self.subscriber.receive(min(wait, self.intake.retry_s), stop)
                refused = self.subscriber.take_refused()
                # Received, not in the outbox yet: the intake may wait on the broker's tail
                # or the producers' history, and these samples are not acknowledged either.
                self._taking = sum(len(b) for b in received)
                try:
                    for delivery in await self.intake.take(received, refused):
                        self._deliver(delivery)
                finally:
                    self._taking = 0
                self._deliver(await self.intake.retry())
                if publisher.done():
                    publisher.result()  # a bug in the publisher must not go unnoticed
                    return
                now = time.monotonic()
                if now >= next_save:
                    next_save = now + self.config.state_interval
                    if self.state:
                        self.state.save(self.outbox.done)
                if now >= next_stats:
                    next_stats = now + self.config.stats_interval
                    self._stats()
        finally:
            await self._finish(publisher)

    def _deliver(self, delivery: Delivery) -> None:
        """Rows into the outbox in order; gap records to the gaps file."""
        if delivery.rows:
            self._precision = delivery.precision
        self.refilled += delivery.refilled
        for part in delivery.rows:
            self._hold(part)
        self._record(delivery.gaps, delivery.precision)

    async def _last_delivered(self, devices: list[str]) -> Positions:
        """Where the broker stands for devices first met (a restarted bridge): what it
        stores, or what the state file says it acknowledged; the intake continues after it,
        so the gap up to now is refilled and nothing is sent twice."""
        where = {d: self._saved[d] for d in devices if d in self._saved}
        where.update(await self.sink.last_stored(devices))
        if where:
            log.info("resuming %d device(s) where the last run stopped", len(where))
        return where

    def _hold(self, batch: schema.Batch) -> None:
        given_up = self.outbox.add(batch)
        if given_up:
            self._record([GapRecord(g, Reason.GIVEN_UP) for g in given_up], self._precision)

    def _record(self, gaps: list[GapRecord], precision: int) -> None:
        """Gap records go to the gaps file at once: they are what an operator audits."""
        if not gaps:
            return
        self.gaps_recorded += len(gaps)
        if self._warn(time.monotonic()):
            log.warning("gap: %s", summary(gaps))
        try:
            self.gaps_file.write(rows(gaps, precision))
        except OSError as exc:
            log.error("cannot write gap records to %s: %s", self.gaps_file.path, exc)

    async def _publish(self) -> None:
        """Publish what the outbox holds, a window at a time, until closing and empty."""
        backoff = Backoff(0.05, 2.0)
        linger = self.config.batch_linger if self.config.batch else 0.0
        while True:
            if linger > 0 and not self._closing.is_set():
                wait = self.outbox.due_in(linger)
                if 0 < wait < float("inf"):  # samples are filling messages: let them
                    await self.sink.flush()
                    await self._until_closing(wait)
                    continue
            messages = self.outbox.take(self.config.window)
            if not messages:
                if self._closing.is_set():
                    return
                await self.sink.flush()  # what only the sink still holds (Kafka: markers)
                await self.outbox.wait(0.2)
                continue
            acked = await self.sink.write_batch(messages)
            self.published += sum(m.samples for m in messages)
            self.acknowledged += self.outbox.settle(messages, acked)
            if all(acked):
                self._last_ack = time.monotonic()
                backoff.reset()
            else:
                await asyncio.sleep(backoff.next())  # the broker is in trouble: do not spin

    async def _until_closing(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._closing.wait(), timeout)
        except TimeoutError:
            pass

    async def _finish(self, publisher: asyncio.Task) -> None:
        """Publish what is held for up to `stop_grace` s; record what is still unsent."""
        self._closing.set()
        try:
            await asyncio.wait_for(asyncio.shield(publisher), self.config.stop_grace)
        except TimeoutError:
            publisher.cancel()
            with suppress(asyncio.CancelledError):
                await publisher
        left = self.outbox.drain()
        self.unsent_at_stop = sum(g.last - g.first + 1 for g, _ in left if g.last is not None)
        self._record(left, self._precision)
        self._deliver(self.intake.close())
        if self.state:
            self.state.save(self.outbox.done)
        log.info(
            "stopped: %d sample(s) acknowledged by %s, %d unsent (recorded as gaps)",
            self.acknowledged,
            self.sink.url,
            self.unsent_at_stop,
        )

    def _stats(self) -> None:
        log.info(
            "received %d samples; %d acknowledged by %s; %d held; %d retried message(s); "
            "%d given up; %d gap(s) recorded; %d malformed message(s) dropped",
            self.subscriber.received,
            self.acknowledged,
            self.sink.url,
            self.outbox.held,
            self.outbox.retried,
            self.outbox.given_up,
            self.gaps_recorded,
            self.subscriber.rejected,
        )

    def figures(self) -> list[Figure]:
        held = self.outbox.held + self._taking
        stalled = time.monotonic() - self._last_ack if held else 0.0
        return [
            Figure(
                "samples_received", "Samples received from ZeroMQ", self.subscriber.received, True
            ),
            Figure(
                "samples_refilled",
                "Samples refilled from the producers' history",
                self.refilled,
                True,
            ),
            Figure(
                "samples_published",
                "Samples sent to the broker (retries count again)",
                self.published,
                True,
            ),
            Figure(
                "samples_acknowledged", "Samples the broker acknowledged", self.acknowledged, True
            ),
            Figure(
                "messages_retried",
                "Messages sent again after no acknowledgement",
                self.outbox.retried,
                True,
            ),
            Figure(
                "samples_dropped",
                "Samples given up past the bound of unsent samples",
                self.outbox.given_up,
                True,
            ),
            Figure(
                "gaps", "Gap records (samples not delivered, and why)", self.gaps_recorded, True
            ),
            Figure(
                "malformed_messages",
                "Malformed ZeroMQ messages dropped",
                self.subscriber.rejected,
                True,
            ),
            Figure("bridge_lag_samples", "Samples received and not acknowledged yet", held),
            Figure(
                "bridge_lag_seconds",
                "Seconds since the last acknowledgement while samples wait",
                stalled,
            ),
            Figure("broker_reconnects", "Reconnections to the broker", self.sink.reconnects, True),
            Figure(
                "batches_overlapping",
                "Batches another bridge had partly stored first (cut down and sent again)",
                self.sink.overlaps,
                True,
            ),
            *getattr(self.sink, "figures", list)(),  # what only this kind of broker has
        ]
