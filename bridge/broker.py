"""What every broker sink offers the bridge, and how a sink is chosen from the URL.

A sink connects (retrying while the broker is unreachable, failing at once on what a
retry cannot fix), publishes messages in batches and reports which ones the broker
acknowledged; the bridge's outbox keeps the others and sends them again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Protocol

from bridge.config import BridgeConfig
from bridge.message import Message

log = logging.getLogger(__name__)


class Sink(Protocol):
    url: str
    reconnects: int
    overlaps: int  # batches another bridge had partly stored first (cut down, sent again)

    async def last_stored(self, devices: list[str]) -> dict[str, tuple[int, int]]:
        """Per device, (seq, timestamp ms) of the newest sample the broker already holds."""
        ...

    async def write_batch(self, messages: list[Message]) -> list[bool]:
        """Publish, and say which messages the broker acknowledged."""
        ...

    async def flush(self) -> None:
        """Called while nothing waits to be sent: finish what the broker acknowledged but
        may still undo (Kafka's end markers); nothing to do for most brokers."""
        ...

    async def close(self) -> None: ...


class Backoff:
    """Waits between attempts to reach a broker: 0.2 s, doubling up to 5 s."""

    def __init__(self, first: float = 0.2, most: float = 5.0) -> None:
        self.first, self.most = first, most
        self.delay = first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.most, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.first


def tls_context(config: BridgeConfig) -> ssl.SSLContext:
    """Verify the broker's certificate against the system's CAs, or `--tls-ca`'s."""
    return ssl.create_default_context(cafile=str(config.tls_ca) if config.tls_ca else None)


def tls_failure(url: str, exc: ssl.SSLError) -> str:
    """A failed TLS handshake in one line that says what to do about it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate of {url} not trusted ({exc.verify_message or exc.reason}): "
            "give the CA that signed it with --tls-ca"
        )
    return f"TLS handshake with {url} failed ({exc.reason or exc}): is it a TLS port?"


async def open_sink(config: BridgeConfig, stop: asyncio.Event) -> Sink | None:
    """The sink for `config.target`, connected; None if `stop` came first.

    An unreachable broker is retried with backoff (logged); wrong credentials or a failed
    TLS handshake raise StartupError: retrying cannot fix them."""
    if config.target.kind == "jetstream":
        from bridge.jetstream import JetStreamSink

        return await JetStreamSink.open(config, stop)
    if config.target.kind == "kafka":
        from bridge.kafka import KafkaSink

        return await KafkaSink.open(config, stop)
    from bridge.mqtt import MqttSink

    return await MqttSink.open(config, stop)
