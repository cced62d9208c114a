"""The producer's settings, built once by the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from common.bus import DEFAULT_CATCHUP, DEFAULT_CONTROL, DEFAULT_PUB, Security
from common.errors import StartupError
from common.shards import ALL, Shard, instance_path, own_endpoint
from producer.model.anomalies import DEFAULT_RATE_PER_HOUR, SIMULATED_KINDS
from producer.model.roles import DEFAULT_MIX, RoleMix
from producer.model.scenario import Scenario

SOURCES = ("sim", "replay", "live")
ON_BAD_ROW = ("error", "skip")  # what a replay row that is not a valid sample gets


@dataclass(frozen=True)
class ProducerConfig:
    source: str = "sim"  # sim | replay | live
    shard: Shard = ALL  # which of several producers this is; it simulates its devices only
    rate: float = 1.0  # samples per (simulated) second, per device
    devices: int = 1
    seed: int | None = None  # None: random, remembered in the state file
    zmq_pub: str = DEFAULT_PUB
    zmq_catchup: str = DEFAULT_CATCHUP  # where subscribers ask for what they missed
    zmq_control: str = DEFAULT_CONTROL  # where `python -m producer ctl` talks to us
    history_s: float = 600.0  # catch-up window, seconds
    history_bytes: int = 256 * 1024 * 1024  # and its memory bound
    security: Security = Security()
    state: Path = Path("data/producer_state.json")
    start_ms: int | None = None  # simulated time of the first sample; None: now
    speed: float = 1.0  # simulated seconds per wall second
    anomaly_rate: float = DEFAULT_RATE_PER_HOUR  # anomalies per device per hour
    anomaly_kinds: tuple[str, ...] | Mapping[str, float] = SIMULATED_KINDS  # or kind -> weight
    anomaly_durations: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    roles: RoleMix = DEFAULT_MIX  # which role each device has
    scenario: Scenario | None = None  # a fleet and a timeline (devices and roles are its own)
    replay_file: Path | None = None
    replay_loop: bool = False
    replay_metric: str = "cpu"  # where the value of a `timestamp,value` file goes
    replay_labels: Path | None = None  # NAB combined_windows.json: ground truth for the file
    on_bad_row: str = "error"  # a replay row that is not a valid sample: error | skip
    max_lag: float = 5.0  # seconds behind schedule before ticks are skipped, not caught up
    stats_interval: float = 60.0  # seconds between status lines
    metrics_port: int = 0  # serve Prometheus /metrics on 127.0.0.1:PORT; 0: off; -1: any
    ready_file: str | None = None  # written once serving (common.ready)


def for_instance(config: ProducerConfig) -> ProducerConfig:
    """The settings of this instance of several: its own endpoints and state file.

    Endpoints given as comma lists name one per instance; a single one is the first
    instance's, and the others' follow it (common.shards.instance_endpoint)."""
    shard = config.shard
    try:
        return replace(
            config,
            zmq_pub=own_endpoint(config.zmq_pub, shard),
            zmq_catchup=own_endpoint(config.zmq_catchup, shard),
            zmq_control=own_endpoint(config.zmq_control, shard),
            state=instance_path(config.state, shard.index),
        )
    except ValueError as exc:
        raise StartupError(str(exc)) from None
