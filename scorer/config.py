"""The live scorer's settings, built once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.bus import DEFAULT_ALERTS, DEFAULT_CATCHUP, DEFAULT_PUB, Security
from scorer.settings import Settings


@dataclass(frozen=True)
class ScorerConfig:
    zmq_pub: str = DEFAULT_PUB  # a comma list: one endpoint per producer
    zmq_catchup: str = DEFAULT_CATCHUP
    zmq_alerts: str = DEFAULT_ALERTS  # bound: broadcasters send alerts here
    security: Security = Security()
    settings: Settings = field(default_factory=Settings)
    report: Path = Path("data/scorer_report.json")
    picture: Path | None = Path("data/scorer_report.png")
    table: bool = False  # redraw the table on stdout
    every: float = 5.0  # seconds between refreshes of the table and the scores in /metrics
    max_alerts: int = 10_000_000
    metrics_port: int = 0
    ready_file: str | None = None
    stats_interval: float = 60.0
