"""`python -m producer ctl`: send one control request to a running producer, return its answer."""

from __future__ import annotations

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
