"""What the producer publishes from: the simulation, a replay file, or this machine (live).

Each source yields batches due at wall-clock times; the producer's loop waits and publishes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from common import schema
from common.errors import StartupError
from common.shards import Shard
from producer import series as series_store

if TYPE_CHECKING:
    from producer.config import ProducerConfig

log = logging.getLogger(__name__)

# Hears (device id, seq) of a row a source refused to publish; (None, None) when the row
# has no valid device id.
Refuse = Callable[[str | None, int | None], None]


class Source(Protocol):
    """Samples due at wall-clock times; the producer's loop waits and publishes."""

    def describe(self) -> str:
        """One line for the start-up log."""
        ...

    def next_due_ms(self) -> float:
        """Wall-clock time (ms) at which the next sample is due."""
        ...

    def take(self, now_ms: float) -> list[schema.Batch]:
        """Every sample due by `now_ms`, in order, in batches of bounded size."""
        ...

    def prefetch(self) -> np.ndarray | None:
        """Use the time before the next deadline to prepare what it will need; the rows it
        generated ahead, if it did (take() cuts its batches from them), else None."""
        ...


def build_rows(
    ts_ms: np.ndarray,
    seq: np.ndarray,
    devices: np.ndarray,
    values: np.ndarray,
    anomaly: np.ndarray | None = None,
    anomaly_metrics: np.ndarray | None = None,
    anomaly_id: np.ndarray | None = None,
) -> np.ndarray:
    """Records from flat, equally long columns (`values` is (n, 4) in METRICS order)."""
    rows = schema.empty_rows(len(ts_ms))
    rows["ts_ms"] = ts_ms
    rows["seq"] = seq
    rows["device"] = devices
    for i, metric in enumerate(schema.METRICS):
        rows[metric] = values[:, i]
    if anomaly is not None:
        rows["anomaly"] = anomaly
        rows["anomaly_metrics"] = anomaly_metrics
        rows["anomaly_id"] = anomaly_id
    return rows


def open_source(
    config: ProducerConfig,
    now_ms: float,
    refuse: Refuse | None = None,
    formation: series_store.Series | None = None,
) -> Source:
    """The configured source, positioned at the first tick due from now; `refuse` hears of
    the rows of a replay file that are not valid samples, when the replay reaches them.
    `formation` is producer 1's series, which a simulating producer I > 1 shares."""
    if config.source == "sim":
        from producer.sources.sim import SimSource

        if formation is not None:
            series, continued = series_store.adopt(config.state, formation, now_ms)
        else:
            series, continued = series_store.resume_or_start(
                config.state,
                config.seed,
                config.devices,
                config.rate,
                now_ms,
                speed=config.speed,
                start_ms=config.start_ms,
                scenario=config.scenario.name if config.scenario else "",
            )
        _log_series(continued)
        from producer.config import device_name

        names = (
            config.scenario.devices if config.scenario else map(device_name, range(config.devices))
        )
        owned = [i for i, name in enumerate(names) if config.shard.owns(name)]
        if not owned:
            return _idle(config, f"{config.devices} device(s)", series)
        return SimSource(
            series,
            config.anomaly_rate,
            config.anomaly_kinds,
            first_tick=series.tick_due_at_or_after(now_ms),
            max_lag_s=config.max_lag,
            devices=None if len(owned) == config.devices else np.array(owned),
            anomaly_durations=config.anomaly_durations,
            roles=config.roles,
            scenario=config.scenario,
        )
    if config.source == "live":
        from producer.sources.live import LiveSource

        if config.devices != 1:
            raise StartupError(
                f"the live source has one device (this machine), got --devices {config.devices}"
            )
        from producer.sources.live import host_device_name

        if not config.shard.owns(host_device_name()):
            return _idle(config, "one device (this machine)")
        series, continued = series_store.resume_or_start(
            config.state, 0, 1, config.rate, now_ms, source="live"
        )
        _log_series(continued)
        return LiveSource(series, first_tick=series.tick_due_at_or_after(now_ms))
    return _replay(config, now_ms, refuse)


def _replay(config: ProducerConfig, now_ms: float, refuse: Refuse | None) -> Source:
    from producer.sources import recording, replay  # pandas, only needed here
    from producer.sources.labels import load_windows

    if config.replay_file is None:
        raise StartupError("the replay source needs --replay-file (STREAM_REPLAY_FILE)")
    windows = None
    if config.replay_labels is not None:
        windows = load_windows(config.replay_labels, config.replay_file)
    played = recording.load(config.replay_file, config.replay_metric, config.on_bad_row, windows)
    if config.shard.count > 1:
        # Rows without a valid device id are counted by the first producer only.
        played = played.only(config.shard.owns, unattributed=config.shard.index == 1)
        if played is None:
            return _idle(config, f"the devices of {config.replay_file}")
    series, _ = series_store.resume_or_start(
        config.state,
        0,
        len(played.devices),
        played.max_rate(config.speed) / config.speed,
        now_ms + replay.GRACE_MS,
        speed=config.speed,
        start_ms=config.start_ms,
        source="replay",
        fresh=True,
    )
    return replay.ReplaySource(played, series, config.replay_loop, refuse)


class IdleSource:
    """A producer of several that owns none of the devices: it publishes nothing, but runs
    (and answers ctl), so that a scaled pipeline keeps running with more producers than
    devices."""

    device_names: list[str] = []

    def __init__(self, shard: Shard, what: str, series: series_store.Series | None = None) -> None:
        self.shard, self.what = shard, what
        self.series = series  # the formation's, which producers 2..N learn from producer 1

    def describe(self) -> str:
        return f"idle: producer {self.shard} owns none of {self.what}"

    def next_due_ms(self) -> float:
        return float("inf")

    def take(self, now_ms: float) -> list[schema.Batch]:
        return []

    def prefetch(self) -> None:
        return None


def _idle(
    config: ProducerConfig, what: str, series: series_store.Series | None = None
) -> IdleSource:
    log.warning("producer %s owns none of %s: idle (run fewer producers)", config.shard, what)
    return IdleSource(config.shard, what, series)


def _log_series(continued: bool) -> None:
    if continued:
        log.info("continuing series saved in the state file")
    else:
        log.info("starting a new series")
