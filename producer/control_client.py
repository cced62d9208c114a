"""Send one control request to a running producer and wait for its answer."""

from __future__ import annotations

from typing import Any

import zmq

from common import control
from common.bus import PLAIN, Security
from common.errors import StartupError


def ask(endpoint: str, request: dict[str, Any], timeout: float, security: Security = PLAIN) -> dict:
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.ipv6 = "[" in endpoint
    try:
        security.connect(sock)
        sock.connect(endpoint)
        sock.send(control.encode(request))
        if not sock.poll(int(timeout * 1000)):
            raise StartupError(f"no answer from the producer at {endpoint} within {timeout:g} s")
        try:
            return control.decode_reply(sock.recv())
        except control.ControlError as exc:
            raise StartupError(f"bad answer from {endpoint}: {exc}") from None
    finally:
        sock.close()
        context.term()
