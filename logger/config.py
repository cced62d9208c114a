"""The logger's settings, built once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.bus import DEFAULT_CATCHUP, DEFAULT_PUB, Security
from common.shards import ALL, Shard


@dataclass(frozen=True)
class LoggerConfig:
    zmq_pub: str = DEFAULT_PUB  # a comma list: one endpoint per producer
    zmq_catchup: str = DEFAULT_CATCHUP  # the producers' histories, for missed samples; likewise
    shard: Shard = ALL  # which of several loggers this is: it logs its share of the devices
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

    @property
    def log_path(self) -> Path:
        """The CSV this logger writes: `csv` itself, or `NAME.I-of-N.csv` for logger I of N > 1."""
        return shard_csv(self.csv, self.shard)


def shard_csv(csv: Path, shard: Shard) -> Path:
    if shard.count == 1:
        return csv
    return csv.with_name(f"{csv.stem}.{shard.index}-of-{shard.count}{csv.suffix}")
