"""The producer's control endpoint: inject anomalies, change the rate, pause, report status."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from common import control
from common.bus import PLAIN, Router, Security

log = logging.getLogger(__name__)


class Controllable(Protocol):
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out a decoded request; raise ControlError with a one-line reason."""
        ...


class ControlServer:
    """Answers one JSON request with one JSON reply."""

    def __init__(self, endpoint: str, target: Controllable, security: Security = PLAIN) -> None:
        self.target = target
        self._router = Router(endpoint, "control", security, control.MAX_REQUEST_BYTES)
        self.endpoint = self._router.endpoint

    async def serve(self, stop: asyncio.Event) -> None:
        async for identity, frames in self._router.requests(stop):
            try:
                if len(frames) != 1:
                    raise control.ControlError("expected one frame")
                decoded = control.decode(frames[0])
                reply = {"ok": True, **self.target.handle(decoded)}
                if decoded["cmd"] != "status":
                    log.info("control: %s", decoded)
            except control.ControlError as exc:
                reply = {"ok": False, "error": str(exc)}
            await self._router.send(identity, [control.encode(reply)])

    def close(self) -> None:
        self._router.close()
