"""The broadcaster's settings, built once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from common.bus import DEFAULT_PUB, Security


@dataclass(frozen=True)
class BroadcasterConfig:
    zmq_pub: str = DEFAULT_PUB  # a comma list: one endpoint per producer
    security: Security = Security()
    ws_host: str = "localhost"
    ws_port: int = 8765
    reuse_port: bool = True  # SO_REUSEPORT: several broadcasters share ws_port (Linux)
    max_client_buffer: int = 4 * 1024 * 1024  # unsent bytes before a client is dropped
    max_inbound_message: int = 64 * 1024
    close_timeout: float = 1.0  # for a client to answer our close frame
    max_clients: int = 10_000  # beyond: HTTP 503
    inbound_rate: float = 10.0  # messages per second a client may send (bursts of 20)
    origins: tuple[str, ...] = ()  # allowed Origin headers; empty: any
    token: str | None = None  # required access token (?token= or Authorization: Bearer)
    tls_cert: str | None = None  # PEM certificate (chain) for wss://
    tls_key: str | None = None
    stale_after: float = 5.0  # /healthz says 503 after this long without a sample
    stats_interval: float = 60.0
    ready_file: str | None = None  # written once serving (common.ready)
