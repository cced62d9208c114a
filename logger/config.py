"""The logger's settings, built once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.bus import DEFAULT_CATCHUP, DEFAULT_PUB, Security


@dataclass(frozen=True)
class LoggerConfig:
    zmq_pub: str = DEFAULT_PUB
    zmq_catchup: str = DEFAULT_CATCHUP  # the producer's history, for missed samples
    security: Security = Security()
    csv: Path = Path("data/stream_log.csv")
    flush_interval: float = 0.5  # seconds a received sample may wait before it is written
    batch_rows: int = 50_000  # write as soon as this many rows are pending
    max_pending_rows: int = 5_000_000  # held in memory while the disk refuses writes
    fsync_seconds: float | None = 1.0  # fsync at most this often; 0: every write; None: never
    rotate_bytes: int = 0  # start a new file past this size; 0: never
    rotate_seconds: float = 0  # start a new file this often; 0: never
    stats_interval: float = 60.0
    metrics_port: int = 0  # serve Prometheus /metrics on 127.0.0.1:PORT; 0: off; -1: any
    ready_file: str | None = None  # written once serving (common.ready)
