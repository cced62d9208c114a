"""Where an MQTT bridge got to, kept in a small file so that a restarted bridge continues.

A JetStream stream can be asked for its last message per subject; an MQTT broker keeps no
history to ask. So the bridge writes, per device, the seq (and its timestamp) up to which
the broker acknowledged every sample, or the bridge recorded it as a gap:

    {"version": 1, "devices": {"host-01": [1234, 1764288307000], ...}}

A restarted bridge continues after it: it refills from the producers' history what came
since, and records as gaps what the history no longer holds. The file is replaced
atomically (written beside it, synced, renamed), every second and at stop; after a
SIGKILL the last second's samples are sent again (MQTT QoS 1 is at least once anyway).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from common.errors import StartupError
from common.locking import open_exclusive

log = logging.getLogger(__name__)

VERSION = 1


class StateFile:
    """The state file of one bridge; `open` takes it (a lock beside it, `<file>.lock`, that
    keeps a second bridge out until this one exits)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved: dict[str, tuple[int, int]] = {}
        self._lock: int | None = None

    def open(self) -> None:
        """Take the file and check that it can be written; StartupError if not."""
        self._lock = open_exclusive(
            self.path.with_name(self.path.name + ".lock"),
            os.O_RDWR,
            f"cannot write the state file {self.path}",
            f"state file {self.path} is in use by another bridge; "
            "give each bridge its own --state-file",
        )
        try:
            self.load()
            self._write(self._saved)
        except OSError as exc:
            self.close()
            raise StartupError(f"cannot write the state file {self.path}: {exc.strerror}") from None
        except StartupError:
            self.close()
            raise

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None

    @property
    def saved(self) -> dict[str, tuple[int, int]]:
        """What the file holds, as loaded or last saved."""
        return self._saved

    def load(self) -> dict[str, tuple[int, int]]:
        """Per device, (seq, timestamp ms) it got to; empty if there is no file yet.

        A file that is not a state file is reported and ignored: the bridge then starts
        from the live samples, as it would the first time."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StartupError(f"cannot read the state file {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            where = {str(d): (int(s), int(t)) for d, (s, t) in data["devices"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring %s: not a bridge state file (%s)", self.path, exc)
            return {}
        self._saved = dict(where)
        if where:
            log.info("continuing %d device(s) after the seqs in %s", len(where), self.path)
        return where

    def save(self, where: dict[str, tuple[int, int]]) -> None:
        """Replace the file with `where` (merged into what it held), if anything moved."""
        if all(self._saved.get(d) == w for d, w in where.items()):
            return
        merged = {**self._saved, **where}
        try:
            self._write(merged)
        except OSError as exc:
            log.error("cannot write the state file %s: %s", self.path, exc.strerror)
            return
        self._saved = merged

    def _write(self, where: dict[str, tuple[int, int]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": VERSION, "devices": {d: list(w) for d, w in where.items()}})
        part = self.path.with_name(self.path.name + ".part")
        with open(part, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, self.path)
