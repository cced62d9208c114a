"""The bridge's settings, built once by the CLI, and the broker URL they start from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from common.bus import DEFAULT_CATCHUP, DEFAULT_PUB, Security

SCHEMES = {"nats": 4222, "tls": 4222, "mqtt": 1883, "mqtts": 8883}
RETENTIONS = ("limits", "interest", "workqueue")
MQTT_VERSIONS = ("3.1.1", "5")
_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a JetStream stream name
_TOKEN = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")  # a subject prefix (no wildcards)


@dataclass(frozen=True)
class Target:
    """Where to publish: the broker's kind and address, from `--to`."""

    scheme: str  # nats, tls (NATS over TLS), mqtt, mqtts
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """'jetstream' or 'mqtt'."""
        return "jetstream" if self.scheme in ("nats", "tls") else "mqtt"

    @property
    def tls(self) -> bool:
        return self.scheme in ("tls", "mqtts")

    @property
    def url(self) -> str:
        """The URL without credentials: safe to log and to write to the ready file."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_target(url: str) -> Target:
    """`nats://HOST:PORT`, `tls://...`, `mqtt://[USER:PASS@]HOST:PORT` or `mqtts://...`;
    raise ValueError naming the URL and what is allowed."""
    allowed = "expected nats://HOST:PORT, tls://HOST:PORT, mqtt://HOST:PORT or mqtts://HOST:PORT"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"malformed broker URL {url!r}: {allowed}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"malformed broker URL {url!r}: {allowed}")
    if parts.query or parts.fragment:
        raise ValueError(f"malformed broker URL {url!r}: no query or fragment allowed")
    return Target(
        scheme=scheme,
        host=parts.hostname,
        port=port or SCHEMES[scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def check_stream_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"stream name {name!r}: expected letters, digits, '-' and '_' only")
    return name


def check_prefix(prefix: str) -> str:
    if not _TOKEN.fullmatch(prefix):
        raise ValueError(
            f"prefix {prefix!r}: expected dot-separated words of letters, digits, '-' and '_'"
        )
    return prefix


@dataclass(frozen=True)
class BridgeConfig:
    target: Target
    zmq_pub: str = DEFAULT_PUB  # a comma list: one endpoint per producer
    zmq_catchup: str = DEFAULT_CATCHUP  # the producers' histories, for missed samples
    security: Security = Security()
    prefix: str = "samples"  # subjects samples.<device>; topics samples/<device>
    stream: str = "SAMPLES"  # JetStream stream, created if missing
    replicas: int = 1
    retention: str = "limits"
    max_age: float = 86_400.0  # seconds a message stays in the stream; 0: for ever
    duplicate_window: float = 120.0  # seconds JetStream remembers message ids
    qos: int = 1  # MQTT
    retain: bool = False  # MQTT: the broker keeps each device's last message for new subscribers
    mqtt_version: str = "3.1.1"
    client_id: str = ""  # MQTT; empty: stream-bridge-<host>-<pid>
    tls_ca: Path | None = None  # PEM of the CAs that may sign the broker's certificate
    batch: bool = False  # a JSON array of consecutive samples of a device per message
    batch_max: int = 500  # samples per message at most, with `batch`
    window: int = 2000  # messages published before their acknowledgements are awaited
    max_unsent: int = 1_000_000  # samples held unacknowledged; past it the oldest are given up
    ack_timeout: float = 5.0  # an unacknowledged JetStream publish is retried after this
    gaps_file: Path = Path("data/bridge.gaps.csv")
    state_file: Path | None = None  # MQTT: where the bridge got to, to continue after a restart
    state_interval: float = 1.0  # seconds between saves of the state file
    stop_grace: float = 1.5  # seconds to publish what is held after SIGTERM
    stats_interval: float = 60.0
    metrics_port: int = 0  # serve Prometheus /metrics on 127.0.0.1:PORT; 0: off; -1: any
    ready_file: str | None = None

    @property
    def subject_prefix(self) -> str:
        return self.prefix

    @property
    def topic_prefix(self) -> str:
        return self.prefix.replace(".", "/")
