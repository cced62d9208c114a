"""ZeroMQ socket hygiene in one place: endpoint checks, the publisher, the subscriber.

The producer binds a PUB socket; loggers and broadcasters connect SUB sockets and
reconnect on their own when the producer restarts. Every socket has a bounded linger
so no process hangs on exit with unsent messages.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time

import zmq
import zmq.asyncio

from common import schema
from common.errors import StartupError
from common.logs import Every

log = logging.getLogger(__name__)

# High-water marks in messages. One message is one tick (all devices), so 100k messages
# is 100 s of buffering at 1 kHz; ZeroMQ's default of 1,000 drops data under bursts.
SEND_HWM = 100_000
RECEIVE_HWM = 100_000
LINGER_MS = 500
MAX_MESSAGE_BYTES = 128 * 1024 * 1024

_TCP = re.compile(r"^tcp://(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\[\]]+):(?P<port>\d+|\*)$")


def parse_endpoint(endpoint: str) -> str:
    """Check an endpoint's syntax; raise ValueError naming it and what is allowed."""
    allowed = "expected tcp://HOST:PORT, ipc://PATH or inproc://NAME"
    if endpoint.startswith(("ipc://", "inproc://")):
        if endpoint.split("://", 1)[1]:
            return endpoint
        raise ValueError(f"malformed endpoint {endpoint!r}: {allowed}")
    match = _TCP.match(endpoint)
    if not match:
        raise ValueError(f"malformed endpoint {endpoint!r}: {allowed}")
    port = match["port"]
    if port != "*" and not 0 < int(port) < 65536:
        raise ValueError(f"malformed endpoint {endpoint!r}: port must be 1-65535, got {port}")
    host = match["host"].strip("[]")
    if host != "*" and not _is_hostname(host):
        raise ValueError(f"malformed endpoint {endpoint!r}: bad host {host!r}")
    return endpoint


def _is_hostname(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host))


class Publisher:
    """The producer's PUB socket. Sends never block: past the high-water mark ZeroMQ drops."""

    def __init__(self, endpoint: str, hwm: int = SEND_HWM) -> None:
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.linger = LINGER_MS
        self._socket.sndhwm = hwm
        self._socket.ipv6 = "[" in endpoint
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartupError(f"cannot bind ZeroMQ endpoint {endpoint}: {reason}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def publish(self, batch: schema.Batch) -> None:
        self._socket.send_multipart(schema.encode(batch), copy=False)

    def close(self) -> None:
        self._socket.close()
        self._context.term()


class Subscriber:
    """A SUB socket that yields decoded batches; drops and counts messages that are not.

    ZeroMQ reconnects to a restarted publisher by itself, so nothing here needs to.
    """

    def __init__(self, endpoint: str, hwm: int = RECEIVE_HWM) -> None:
        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.linger = 0
        self._socket.rcvhwm = hwm
        self._socket.maxmsgsize = MAX_MESSAGE_BYTES
        self._socket.reconnect_ivl = 100
        self._socket.reconnect_ivl_max = 1000
        self._socket.setsockopt(zmq.SUBSCRIBE, schema.TOPIC)
        self._socket.ipv6 = "[" in endpoint
        try:
            self._socket.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartupError(f"cannot connect to ZeroMQ endpoint {endpoint}: {reason}") from None
        self.endpoint = endpoint
        self.received = 0  # valid samples
        self.rejected = 0  # messages dropped as malformed
        self._warn = Every(10.0)

    async def receive(self, timeout: float, max_messages: int = 1000) -> list[schema.Batch]:
        """Wait up to `timeout` s for messages, then take all that are ready (up to a cap)."""
        if not await self._socket.poll(int(timeout * 1000), zmq.POLLIN):
            return []
        batches: list[schema.Batch] = []
        for _ in range(max_messages):
            if not self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                break
            frames = await self._socket.recv_multipart()
            try:
                batch = schema.decode(frames)
            except schema.MessageError as exc:
                self.rejected += 1
                if self._warn(time.monotonic()):
                    log.warning("dropped a malformed message (%s); %d so far", exc, self.rejected)
                continue
            self.received += len(batch)
            batches.append(batch)
        return batches

    def close(self) -> None:
        self._socket.close()
        self._context.term()
