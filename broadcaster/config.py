"""The broadcaster's settings, built once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BroadcasterConfig:
    zmq_pub: str = "tcp://127.0.0.1:5556"
    ws_host: str = "localhost"
    ws_port: int = 8765
    max_client_buffer: int = 4 * 1024 * 1024  # unsent bytes before a client is dropped
    max_inbound_message: int = 64 * 1024
    close_timeout: float = 1.0  # for a client to answer our close frame
    stats_interval: float = 60.0
