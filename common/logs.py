"""Logging set-up, done once per process by its CLI."""

from __future__ import annotations

import logging
import sys

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def setup_logging(level: str) -> None:
    """Lines to stderr; honcho prefixes them with the process name and time."""
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The websockets library logs every handshake failure at INFO/ERROR with tracebacks.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, logging.getLogger().level))


class Every:
    """True at most once per `interval` seconds: keeps repeated warnings to one line a while."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0

    def __call__(self, now: float) -> bool:
        if now >= self._next:
            self._next = now + self.interval
            return True
        return False
