"""The ROUTER socket that answers replay requests from the producer's history."""

from __future__ import annotations

import asyncio
import logging
import os

import zmq
import zmq.asyncio

from common import recovery
from common.bus import LINGER_MS, PLAIN, Security
from common.errors import StartupError
from producer.history import History

log = logging.getLogger(__name__)


class HistoryServer:
    """Serves `History.since` to DEALER clients; a bad request gets an empty answer."""

    def __init__(self, endpoint: str, history: History, security: Security = PLAIN) -> None:
        security.check_bind(endpoint)
        self.history = history
        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._auth = security.serve(self._socket, self._context)
        self._socket.linger = LINGER_MS
        self._socket.sndhwm = 0  # never drop a reply part: the history bounds its size
        self._socket.maxmsgsize = recovery.MAX_REQUEST_BYTES
        self._socket.ipv6 = "[" in endpoint
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartupError(f"cannot bind replay endpoint {endpoint}: {reason}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.requests = 0
        self.rejected = 0

    async def serve(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not await self._socket.poll(200, zmq.POLLIN):
                continue
            identity, *frames = await self._socket.recv_multipart()
            self.requests += 1
            self.history.requests += 1
            try:
                after, after_ts_ms = recovery.decode_request(frames)
            except recovery.ProtocolError as exc:
                self.rejected += 1
                log.warning("bad replay request: %s", exc)
                await self._socket.send_multipart([identity, *recovery.encode_end({}, {})])
                continue
            sent = 0
            for batch in self.history.since(after, after_ts_ms):
                await self._socket.send_multipart([identity, *recovery.encode_batch(batch)])
                sent += len(batch)
            await self._socket.send_multipart(
                [
                    identity,
                    *recovery.encode_end(
                        self.history.oldest(), self.history.run_first, list(self.history.skipped)
                    ),
                ]
            )
            log.info("replayed %d sample(s) to a subscriber", sent)

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
        self._socket.close()
        self._context.term()
