"""One writer per file: a file opened and locked (flock) for this process alone, so that a
second logger on the same CSV, or a second bridge on the same state file, stops at start
with one line instead of interleaving its writes with the first one's."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from common.errors import StartupError


def open_exclusive(path: Path, flags: int, cannot: str, in_use: str) -> int:
    """`path` opened (created if need be, with its folder) with `flags` and locked for this
    process alone; StartupError `cannot: <reason>` if it cannot be opened, `in_use` if
    another process holds the lock."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, flags | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StartupError(f"{cannot}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(in_use) from None
    return fd
