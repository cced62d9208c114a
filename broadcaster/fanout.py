"""Fan-out to WebSocket clients with a bound on what any one of them may hold up.

Writes never wait for a client, so one that stops reading would grow its server-side
buffer forever. Before each batch, a connection whose unsent bytes exceed the bound is
closed with 1008 and aborted if it does not answer in time; the others never wait for it.

Each batch's frames are framed once per subscription (a server's frames are not masked,
and compression is off) and written to each connection in one `transport.write`, instead
of one `websockets.broadcast()` call per frame, which frames every message again for
every connection.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Iterable

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode
from websockets.protocol import State

from broadcaster.subscription import Downsampler, Subscription
from common import render, schema

log = logging.getLogger(__name__)


def peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


def text_frames(messages: Iterable[bytes]) -> bytes:
    """Messages as final, unmasked TEXT frames (RFC 6455 5.2), back to back."""
    parts = []
    for message in messages:
        n = len(message)
        if n < 126:
            parts.append(bytes((0x81, n)))
        elif n < 65536:
            parts.append(struct.pack("!BBH", 0x81, 126, n))
        else:
            parts.append(struct.pack("!BBQ", 0x81, 127, n))
        parts.append(message)
    return b"".join(parts)


def write(connections: Iterable[ServerConnection], messages: list[bytes]) -> int:
    """Write the messages to every open connection; returns how many connections got them.

    Safe beside websockets' own writes: everything runs on the event loop thread and
    websockets hands each of its frames to the transport at once, so frames never
    interleave; a connection that is closing is skipped, as `broadcast()` does.
    """
    if not messages:
        return 0
    wire = text_frames(messages)
    written = 0
    for connection in connections:
        if connection.protocol.state is State.OPEN and not connection.transport.is_closing():
            connection.transport.write(wire)
            written += 1
    return written


class Fanout:
    """The clients that receive samples, what each subscribed to, and the policy for slow ones.

    Clients with the same subscription share the frames: each batch is rendered once per
    distinct subscription, not once per client.
    """

    def __init__(self, max_buffer: int, close_timeout: float, recent_rows: int = 100_000) -> None:
        self.max_buffer = max_buffer
        self.close_timeout = close_timeout
        self.clients: dict[ServerConnection, Subscription] = {}
        self.sent = 0  # frames written, summed over clients
        self.dropped_clients = 0
        self._samplers: dict[Subscription, Downsampler] = {}
        self._recent: deque[schema.Batch] = deque()
        self._recent_rows = 0
        self._recent_limit = recent_rows
        self._closing: set[asyncio.Task[None]] = set()

    def add(self, connection: ServerConnection, subscription: Subscription) -> None:
        self.clients[connection] = subscription

    def discard(self, connection: ServerConnection) -> None:
        subscription = self.clients.pop(connection, None)
        if subscription is not None and subscription not in self.clients.values():
            self._samplers.pop(subscription, None)

    def send(self, batch: schema.Batch) -> None:
        """Write the batch to every client that is keeping up, as each subscribed to it."""
        self._remember(batch)
        groups: dict[Subscription, list[ServerConnection]] = {}
        for connection, subscription in list(self.clients.items()):
            transport = connection.transport
            if transport is None or transport.is_closing():
                continue
            if transport.get_write_buffer_size() > self.max_buffer:
                self._drop(connection)
            else:
                groups.setdefault(subscription, []).append(connection)
        for subscription, connections in groups.items():
            frames = self._frames(subscription, batch)
            self.sent += len(frames) * write(connections, frames)

    def history(self, connection: ServerConnection, subscription: Subscription) -> None:
        """Send the last `subscription.history` samples per device to one client, now."""
        if not subscription.history or not self._recent:
            return
        rows = np.concatenate([b.rows for b in self._recent])
        rows = rows[subscription.wants(rows)]
        keep = np.zeros(len(rows), bool)
        names, inverse = np.unique(rows["device"], return_inverse=True)
        for i in range(len(names)):
            keep[np.flatnonzero(inverse == i)[-subscription.history :]] = True
        recent = self._recent[-1].with_rows(rows[keep])
        write([connection], self._render(subscription, recent))

    def _remember(self, batch: schema.Batch) -> None:
        self._recent.append(batch)
        self._recent_rows += len(batch)
        while self._recent_rows - len(self._recent[0]) >= self._recent_limit:
            self._recent_rows -= len(self._recent.popleft())

    def _frames(self, subscription: Subscription, batch: schema.Batch) -> list[bytes]:
        rows = batch.rows
        if subscription.devices is not None:
            rows = rows[subscription.wants(rows)]
        if subscription.max_rate is not None:
            sampler = self._samplers.setdefault(subscription, Downsampler(subscription.max_rate))
            rows = rows[sampler.keep(rows)] if len(rows) else rows
        return self._render(subscription, batch.with_rows(rows))

    @staticmethod
    def _render(subscription: Subscription, batch: schema.Batch) -> list[bytes]:
        objects = render.json_objects(batch, subscription.fields)
        if subscription.batch:
            return [b"[" + b",".join(objects) + b"]"] if objects else []
        return objects

    def _drop(self, connection: ServerConnection) -> None:
        self.discard(connection)
        self.dropped_clients += 1
        log.warning(
            "client %s fell behind (%d bytes unsent > %d): closing with 1008",
            peer(connection),
            connection.transport.get_write_buffer_size(),
            self.max_buffer,
        )
        task = asyncio.create_task(self._close(connection, CloseCode.POLICY_VIOLATION, "too slow"))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, connection: ServerConnection, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(connection.close(code, reason), self.close_timeout)
        except (TimeoutError, OSError):
            pass
        finally:
            connection.transport.abort()
