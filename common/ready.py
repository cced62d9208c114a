"""Readiness: a process says it is serving, and where, by writing a small JSON file.

Supervisors, scripts and tests wait for the file instead of parsing log lines, and read
the endpoints and ports actually bound (`--ws-port 0`, `tcp://127.0.0.1:*`) from it:

    {"process": "producer", "instance": "producer.1", "pid": 4242,
     "pub": "tcp://127.0.0.1:5556", "catchup": "...", "control": "...", "metrics_port": 0}

`{instance}` in the path is replaced by the instance name (honcho's `HONCHO_PROCESS_NAME`,
such as `producer.2`, or the process name), so one setting serves a scaled pipeline.
The file is replaced atomically, and removed when the process stops.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def instance_name(process: str) -> str:
    """`producer.2` under honcho, else the process name."""
    return os.environ.get("HONCHO_PROCESS_NAME") or process


def instance_path(template: str | Path, process: str) -> Path:
    """`template` with `{instance}` replaced by this instance's name."""
    return Path(str(template).replace("{instance}", instance_name(process)))


class Readiness:
    """The ready file of one process (nothing at all when no path is configured)."""

    def __init__(self, template: str | Path | None, process: str) -> None:
        self.process = process
        self.instance = instance_name(process)
        self.path = instance_path(template, process) if template else None

    def announce(self, **where: Any) -> None:
        """Write the file: the process is serving, at these endpoints and ports."""
        if self.path is None:
            return
        body = {"process": self.process, "instance": self.instance, "pid": os.getpid(), **where}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        partial.write_text(json.dumps(body) + "\n")
        os.replace(partial, self.path)
        log.debug("ready: %s", body)

    def withdraw(self) -> None:
        """Remove the file if it is still this process's."""
        if self.path is None:
            return
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


def read(path: Path) -> dict[str, Any] | None:
    """What a ready file says, or None while there is none (it is replaced atomically)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait(path: Path, pid: int, timeout: float, alive: Callable[[], bool]) -> dict[str, Any]:
    """The ready file of process `pid`, once it has written it; ChildProcessError as soon as
    `alive()` says the process ended first, TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        info = read(path)
        if info is not None and info.get("pid") == pid:
            return info
        if not alive():
            raise ChildProcessError(f"process {pid} ended before it was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} not ready within {timeout:g} s")
        time.sleep(0.02)


def instance_files(template: str | Path, process: str, most: int = 16) -> dict[int, dict]:
    """What the running instances of `process` wrote to their ready files, by instance
    index (`producer.2` is 2; a bare `producer` counts as 1): only files whose process is
    alive. Empty when the template has no `{instance}` (one file cannot tell instances)."""
    text = str(template)
    if "{instance}" not in text:
        return {}
    found: dict[int, dict] = {}
    names = [(i, f"{process}.{i}") for i in range(1, most + 1)] + [(1, process)]
    for index, name in names:
        if index in found:
            continue
        try:
            info = json.loads(Path(text.replace("{instance}", name)).read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(info, dict):
            found[index] = info
    return found
