"""The producer's settings, built once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.bus import DEFAULT_CATCHUP, DEFAULT_CONTROL, DEFAULT_PUB, Security
from common.schema import ANOMALY_KINDS

SOURCES = ("sim", "replay", "live")


@dataclass(frozen=True)
class ProducerConfig:
    source: str = "sim"  # sim | replay | live
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
    anomaly_rate: float = 4.0  # anomalies per device per hour
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS
    replay_file: Path | None = None
    replay_loop: bool = False
    replay_metric: str = "cpu"  # where the value of a `timestamp,value` file goes
    max_lag: float = 5.0  # seconds behind schedule before ticks are skipped, not caught up
    stats_interval: float = 60.0  # seconds between status lines
    metrics_port: int = 0  # serve Prometheus /metrics on 127.0.0.1:PORT; 0: off; -1: any
    ready_file: str | None = None  # written once serving (common.ready)


def device_name(index: int) -> str:
    """host-01, host-02, ..., host-100: a device keeps its name when the count grows."""
    return f"host-{index + 1:02d}"
