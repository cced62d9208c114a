"""The producer's loop: wake at each tick's absolute deadline, generate, publish."""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from common import schema
from common.bus import Publisher
from common.signals import wait_or_stop
from producer import series as series_store
from producer.config import ProducerConfig, device_name
from producer.model import Model
from producer.series import Series

log = logging.getLogger(__name__)

MAX_ROWS_PER_MESSAGE = 100_000


class TickSource:
    """Turns tick numbers of a series into batches of samples (all devices per tick)."""

    def __init__(self, series: Series) -> None:
        self.series = series
        self.model = Model(series.seed, series.devices)
        self.precision = schema.precision_for_rate(series.rate)
        names = [device_name(i) for i in range(series.devices)]
        self._devices = np.array(names, dtype=f"S{schema.DEVICE_MAX_BYTES}")

    def batch(self, first: int, last: int) -> schema.Batch:
        """Ticks first..last inclusive, tick-major, devices in order within a tick."""
        ticks = np.arange(first, last + 1)
        ts_ms = self.series.time_ms(ticks)
        values = self.model.values(ts_ms)
        n, d = len(ticks), self.series.devices
        rows = schema.empty_rows(n * d)
        rows["ts_ms"] = np.repeat(ts_ms, d)
        rows["seq"] = np.repeat(self.series.seq_base + ticks, d)
        rows["device"] = np.tile(self._devices, n)
        flat = values.reshape(n * d, len(schema.METRICS))
        for i, metric in enumerate(schema.METRICS):
            rows[metric] = flat[:, i]
        return schema.Batch(rows=rows, precision=self.precision)


async def run(config: ProducerConfig, stop: asyncio.Event) -> None:
    """Publish until `stop` is set. Raises StartupError if the endpoint or state is unusable."""
    series, continued = series_store.resume_or_start(
        config.state, config.seed, config.devices, config.rate, time.time() * 1000
    )
    source = TickSource(series)
    publisher = Publisher(config.zmq_pub)
    try:
        next_tick = series.tick_at_or_after(time.time() * 1000)
        log.info(
            "%s series seed=%d: %d device(s) at %g Hz from seq %d, publishing on %s",
            "continuing" if continued else "starting",
            series.seed,
            series.devices,
            series.rate,
            series.seq_base + next_tick,
            publisher.endpoint,
        )
        published, next_tick = await _publish_on_schedule(
            config, source, publisher, next_tick, stop
        )
        log.info(
            "stopped after publishing %d samples; last seq %d",
            published,
            series.seq_base + next_tick - 1,
        )
    finally:
        publisher.close()


async def _publish_on_schedule(
    config: ProducerConfig,
    source: TickSource,
    publisher: Publisher,
    next_tick: int,
    stop: asyncio.Event,
) -> tuple[int, int]:
    """Publish until stopped; return (samples published, next tick)."""
    series = source.series
    ticks_per_message = max(1, MAX_ROWS_PER_MESSAGE // series.devices)
    published = 0
    next_stats = time.monotonic() + config.stats_interval
    while True:
        due_s = int(series.time_ms(np.int64(next_tick))) / 1000.0
        if await wait_or_stop(stop, due_s - time.time()):
            return published, next_tick
        now_ms = time.time() * 1000
        last_tick = max(next_tick, series.last_tick_at_or_before(now_ms))
        behind_s = (last_tick - next_tick) / series.rate
        if behind_s > config.max_lag:
            # Suspended or starved: skip rather than flood subscribers with stale samples.
            resume = series.last_tick_at_or_before(now_ms)
            log.warning(
                "%.1f s behind schedule; skipping seq %d..%d",
                behind_s,
                series.seq_base + next_tick,
                series.seq_base + resume - 1,
            )
            next_tick = last_tick = resume
        for first in range(next_tick, last_tick + 1, ticks_per_message):
            batch = source.batch(first, min(last_tick, first + ticks_per_message - 1))
            publisher.publish(batch)
            published += len(batch)
        next_tick = last_tick + 1
        if time.monotonic() >= next_stats:
            next_stats += config.stats_interval
            log.info("published %d samples, next seq %d", published, series.seq_base + next_tick)
