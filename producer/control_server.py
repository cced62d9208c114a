"""The producer's control endpoint: inject anomalies, change the rate, pause, report status."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Protocol

import zmq
import zmq.asyncio

from common import control
from common.bus import LINGER_MS, PLAIN, Security
from common.errors import StartupError

log = logging.getLogger(__name__)


class Controllable(Protocol):
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out a decoded request; raise ControlError with a one-line reason."""
        ...


class ControlServer:
    """A ROUTER socket answering one JSON request with one JSON reply."""

    def __init__(self, endpoint: str, target: Controllable, security: Security = PLAIN) -> None:
        security.check_bind(endpoint)
        self.target = target
        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.linger = LINGER_MS
        self._socket.maxmsgsize = control.MAX_REQUEST_BYTES
        self._socket.ipv6 = "[" in endpoint
        self._auth = security.serve(self._socket, self._context)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StartupError(f"cannot bind control endpoint {endpoint}: {reason}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    async def serve(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not await self._socket.poll(200, zmq.POLLIN):
                continue
            identity, *frames = await self._socket.recv_multipart()
            try:
                if len(frames) != 1:
                    raise control.ControlError("expected one frame")
                request = control.decode(frames[0])
                reply = {"ok": True, **self.target.handle(request)}
                if request["cmd"] != "status":
                    log.info("control: %s", request)
            except control.ControlError as exc:
                reply = {"ok": False, "error": str(exc)}
            await self._socket.send_multipart([identity, control.encode(reply)])

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
        self._socket.close()
        self._context.term()
