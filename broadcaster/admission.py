"""Who may connect: path, capacity, Origin allow-list and access token, checked at handshake.

Refusals are plain HTTP answers (404, 503, 403, 401) before any WebSocket traffic. The
token is compared in constant time and never written to a log.
"""

from __future__ import annotations

import hmac
import http
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response


@dataclass(frozen=True)
class Admission:
    max_clients: int
    origins: tuple[str, ...] = ()  # empty: any Origin (or none) is accepted
    token: str | None = None

    def checker(
        self, clients: Callable[[], int]
    ) -> Callable[[ServerConnection, Request], Response | None]:
        """A `process_request` hook; `clients` counts the connections being served."""

        def check(connection: ServerConnection, request: Request) -> Response | None:
            url = urlsplit(request.path)
            if url.path not in ("", "/"):
                return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
            if clients() >= self.max_clients:
                return connection.respond(
                    http.HTTPStatus.SERVICE_UNAVAILABLE,
                    f"too many clients (limit {self.max_clients})\n",
                )
            if self.origins and request.headers.get("Origin") not in self.origins:
                return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
            if not self.authorized(request):
                return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
            return None

        return check

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the token (always, when there is none to carry)."""
        if self.token is None:
            return True
        offered = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            offered = header.removeprefix("Bearer ")
        return hmac.compare_digest(offered.encode(), self.token.encode())


class InboundLimit:
    """Token bucket for messages a client sends: `rate` per second, bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = 0.0

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Whether `cost` messages may pass now (they are then counted)."""
        if self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False
