"""What a producer starts from: the source its settings ask for, positioned at the first
tick due, with the series it continues or begins (kept in the state file)."""

from __future__ import annotations

import logging

import numpy as np

from common.errors import StartupError
from producer.config import ProducerConfig
from producer.sources import IdleSource, Refuse, Source
from producer.sources import series as series_store

log = logging.getLogger(__name__)


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
        from producer.sources.sim import SimSource, device_name

        if formation is not None:
            series, continued = series_store.adopt(config.state, formation, now_ms)
        else:
            series, continued = series_store.continue_or_start(
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
        series, continued = series_store.continue_or_start(
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
    series, _ = series_store.continue_or_start(
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
