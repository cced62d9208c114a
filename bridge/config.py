"""The bridge's settings, built once by the CLI, and the broker URL they start from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from common.bus import DEFAULT_CATCHUP, DEFAULT_PUB, Security
from common.shards import ALL, Shard

SCHEMES = {"nats": 4222, "tls": 4222, "mqtt": 1883, "mqtts": 8883, "kafka": 9092, "kafka+ssl": 9093}
KAFKA_SCHEMES = ("kafka", "kafka+ssl")
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")
RETENTIONS = ("limits", "interest", "workqueue")
MQTT_VERSIONS = ("3.1.1", "5")
_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a JetStream stream name
_TOKEN = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")  # a subject prefix (no wildcards)
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")  # a Kafka topic name
_ALLOWED = (
    "expected nats://HOST:PORT, tls://HOST:PORT, mqtt://HOST:PORT, mqtts://HOST:PORT, "
    "kafka://HOST:PORT[,HOST:PORT...] or kafka+ssl://..."
)


@dataclass(frozen=True)
class Target:
    """Where to publish: the broker's kind and address, from `--to`."""

    scheme: str  # nats, tls (NATS over TLS), mqtt, mqtts, kafka, kafka+ssl
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    more: tuple[tuple[str, int], ...] = ()  # Kafka: the other bootstrap servers

    @property
    def kind(self) -> str:
        """'jetstream', 'mqtt' or 'kafka'."""
        if self.scheme in KAFKA_SCHEMES:
            return "kafka"
        return "jetstream" if self.scheme in ("nats", "tls") else "mqtt"

    @property
    def family(self) -> str:
        """'nats', 'mqtt' or 'kafka': what default file names say."""
        return {"jetstream": "nats"}.get(self.kind, self.kind)

    @property
    def tls(self) -> bool:
        return self.scheme in ("tls", "mqtts", "kafka+ssl")

    @property
    def servers(self) -> list[str]:
        """HOST:PORT of every server given."""
        return [f"{_host(h)}:{p}" for h, p in ((self.host, self.port), *self.more)]

    @property
    def url(self) -> str:
        """The URL without credentials: safe to log and to write to the ready file."""
        return f"{self.scheme}://{','.join(self.servers)}"


def parse_target(url: str) -> Target:
    """`nats://HOST:PORT`, `tls://...`, `mqtt://[USER:PASS@]HOST:PORT`, `mqtts://...`,
    `kafka://[USER:PASS@]HOST:PORT[,HOST:PORT...]` or `kafka+ssl://...`; raise ValueError
    naming the URL and what is allowed."""
    scheme, sep, rest = url.strip().partition("://")
    servers: list[str] = [rest]
    if sep and scheme.lower() in KAFKA_SCHEMES:
        credentials, at, hosts = rest.rpartition("@")
        if "," in credentials:
            raise ValueError(f"malformed broker URL {url!r}: credentials go before the first host")
        servers = hosts.split(",")
        rest = f"{credentials}{at}{servers[0]}"
    parsed = [_split(f"{scheme}://{rest}", url)]
    parsed += [_split(f"{scheme}://{server}", url) for server in servers[1:]]
    parts, _ = parsed[0]
    if any(p.username is not None or p.password is not None for p, _ in parsed[1:]):
        raise ValueError(f"malformed broker URL {url!r}: credentials go before the first host")
    kind = parts.scheme.lower()
    return Target(
        scheme=kind,
        host=parts.hostname or "",
        port=parsed[0][1] or SCHEMES[kind],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        more=tuple((p.hostname or "", port or SCHEMES[kind]) for p, port in parsed[1:]),
    )


def _split(one: str, url: str):
    """One server's URL, split and checked; its port (None if not given)."""
    try:
        parts = urlsplit(one)
        port = parts.port
    except ValueError:
        raise ValueError(f"malformed broker URL {url!r}: {_ALLOWED}") from None
    if parts.scheme.lower() not in SCHEMES or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"malformed broker URL {url!r}: {_ALLOWED}")
    if parts.query or parts.fragment:
        raise ValueError(f"malformed broker URL {url!r}: no query or fragment allowed")
    return parts, port


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def check_stream_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"stream name {name!r}: expected letters, digits, '-' and '_' only")
    return name


def check_topic(name: str) -> str:
    if not _TOPIC.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"topic {name!r}: expected 1-249 letters, digits, '.', '-' and '_'")
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
    topic: str = "samples"  # Kafka topic, created if missing
    partitions: int = 6  # of a Kafka topic the bridge creates
    transactions: bool = True  # Kafka: each window committed as one transaction
    transactional_id: str = ""  # Kafka; empty: stream-bridge-<topic>-<shard I>-of-<N>
    sasl_mechanism: str = "SCRAM-SHA-256"  # Kafka, when a user name is given
    shard: Shard = ALL  # which of several bridges this is: it bridges its share of the devices
    replicas: int = 1  # of a JetStream stream or Kafka topic the bridge creates
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
    batch_linger: float = 0.1  # s samples may wait to fill larger messages, with `batch`
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
    def kafka_transactional_id(self) -> str:
        """Stable per bridge instance (topic and shard), so a restarted bridge fences the
        one it replaces, and two bridges given the same share of one topic cannot both run."""
        return self.transactional_id or (
            f"stream-bridge-{self.topic}-{self.shard.index}-of-{self.shard.count}"
        )

    @property
    def subject_prefix(self) -> str:
        return self.prefix

    @property
    def topic_prefix(self) -> str:
        return self.prefix.replace(".", "/")
