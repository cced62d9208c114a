"""The broadcaster's settings, built once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from broadcaster.latest import DEFAULT_MAX_DEVICES
from common.bus import DEFAULT_ALERTS, DEFAULT_CATCHUP, DEFAULT_CONTROL, DEFAULT_PUB, Security

# Samples one resume may send, and hold live meanwhile. 100,000 is ten minutes of 100
# devices at 1 Hz, or 10 s of 100 devices at 100 Hz; it costs the broadcaster about 0.2 s
# of CPU and 30 MB while it is being sent (bench/resume.py; docs/guarantees.md).
DEFAULT_RESUME_MAX = 100_000


@dataclass(frozen=True)
class BroadcasterConfig:
    zmq_pub: str = DEFAULT_PUB  # a comma list: one endpoint per producer
    zmq_catchup: str = DEFAULT_CATCHUP  # the producers' history, for resuming clients
    zmq_control: str = DEFAULT_CONTROL  # the producers' status: roles, groups, planned events
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
    resume_max: int = DEFAULT_RESUME_MAX  # samples one resume may send (and hold live)
    metrics_port: int = 0  # /metrics on 127.0.0.1 without the token (0: off)
    stats_interval: float = 60.0
    ready_file: str | None = None  # written once serving (common.ready)
    scenario: str | None = None  # name of the scenario the producers run, for the dashboard
    labels: str = "sent"  # label policy: sent, blind (unless a client asks) or never
    alert_rate: float = 1000.0  # alerts per second a client may send (bursts of as many)
    zmq_alerts: str = DEFAULT_ALERTS  # where alerts go: the scorers' endpoints ("": nowhere)
    # devices whose newest sample /metrics/samples shows (0: off; then only the device
    # groups clients ask for are taken from the bus)
    sample_metrics_devices: int = DEFAULT_MAX_DEVICES
    fleet_refresh: float = 30.0  # seconds between two questions to the producers (/fleet.json)
