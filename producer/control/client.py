"""`python -m producer ctl`: send one control request to a running producer, return its answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import bus, control
from common.bus import PLAIN, Security
from common.errors import StartupError


def ask(endpoint: str, request: dict[str, Any], timeout: float, security: Security = PLAIN) -> dict:
    """The producer's reply; StartupError if it does not answer, or answers nonsense."""
    answer = bus.ask(endpoint, control.encode(request), timeout, security)
    try:
        return control.decode_reply(answer)
    except control.ControlError as exc:
        raise StartupError(f"bad answer from {endpoint}: {exc}") from None


def ask_all(
    endpoints: list[str], request: dict[str, Any], timeout: float, security: Security = PLAIN
) -> list[dict]:
    """Every producer's reply, in the order of `endpoints`, asked at once (so one that is
    down costs `timeout` once, not per producer); a producer that does not answer gets
    {"ok": false, "error": ...} in its place."""

    def one(endpoint: str) -> dict:
        try:
            return ask(endpoint, request, timeout, security)
        except StartupError as exc:
            return {"ok": False, "error": str(exc)}

    with ThreadPoolExecutor(max_workers=len(endpoints) or 1) as pool:
        return list(pool.map(one, endpoints))
