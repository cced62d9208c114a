"""Fan-out to WebSocket clients with a bound on what any one of them may hold up.

`websockets.broadcast()` writes without backpressure, so a client that stops reading
would grow its server-side buffer forever. Before each batch, a connection whose unsent
bytes exceed the bound is closed with 1008 and aborted if it does not answer in time;
the others never wait for it.
"""

from __future__ import annotations

import asyncio
import logging

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.frames import CloseCode

log = logging.getLogger(__name__)


def peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


class Fanout:
    """The set of clients that receive samples, and the policy for slow ones."""

    def __init__(self, max_buffer: int, close_timeout: float) -> None:
        self.max_buffer = max_buffer
        self.close_timeout = close_timeout
        self.clients: set[ServerConnection] = set()
        self.sent = 0  # frames written, summed over clients
        self.dropped_clients = 0
        self._closing: set[asyncio.Task[None]] = set()

    def add(self, connection: ServerConnection) -> None:
        self.clients.add(connection)

    def discard(self, connection: ServerConnection) -> None:
        self.clients.discard(connection)

    def send(self, frames: list[bytes]) -> None:
        """Write every frame (UTF-8 JSON, sent as a text frame) to every client keeping up."""
        if not frames:
            return
        ready = []
        for connection in list(self.clients):
            transport = connection.transport
            if transport is None or transport.is_closing():
                continue
            if transport.get_write_buffer_size() > self.max_buffer:
                self._drop(connection)
            else:
                ready.append(connection)
        for frame in frames:
            broadcast(ready, frame, text=True)
        self.sent += len(frames) * len(ready)

    def _drop(self, connection: ServerConnection) -> None:
        self.clients.discard(connection)
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
