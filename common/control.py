"""The producer's control protocol: one JSON request, one JSON reply, over ZeroMQ.

    {"cmd": "status"}
    {"cmd": "inject", "kind": "spike", "device": "host-01", "metric": "cpu",
     "duration_s": 30, "size": 0.8}
    {"cmd": "rate", "rate": 50, "at_ms": 1754265600500}   (at_ms optional, see below)
    {"cmd": "pause"} / {"cmd": "resume"}
    {"cmd": "series"}      the producer's series (seed, tick grid, seqs): producers 2..N of a
                           formation started without a seed learn producer 1's this way

`at_ms` (epoch ms) asks for the rate to change at the first tick due at or after that
time, so that every producer of a formation re-anchors on the same tick.

Replies are {"ok": true, ...} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common import bus
from common.bus import PLAIN, Security
from common.errors import StartupError

COMMANDS = ("status", "inject", "rate", "pause", "resume", "series")
MAX_REQUEST_BYTES = 64 * 1024


class ControlError(ValueError):
    """A control request that cannot be carried out; the message says why."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def decode(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_REQUEST_BYTES:
        raise ControlError("request too large")
    try:
        message = json.loads(data)
    except ValueError:
        raise ControlError("request is not JSON") from None
    if not isinstance(message, dict):
        raise ControlError("request must be a JSON object")
    command = message.get("cmd")
    if command not in COMMANDS:
        raise ControlError(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)}")
    return message


def decode_reply(data: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError("reply is not JSON") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError("reply has no 'ok'")
    return reply


def ask(endpoint: str, request: dict[str, Any], timeout: float, security: Security = PLAIN) -> dict:
    """The producer's reply; StartupError if it does not answer, or answers nonsense."""
    answer = bus.ask(endpoint, encode(request), timeout, security)
    try:
        return decode_reply(answer)
    except ControlError as exc:
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
