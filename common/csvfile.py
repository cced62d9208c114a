"""One CSV file appended to by one process at a time, and what it promises about it.

The logger's CSV and its side files, and a bridge's gaps file, are such files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from common.errors import StartupError
from common.locking import open_exclusive
from common.schema import CSV_HEADER

log = logging.getLogger(__name__)

_TAIL_SCAN = 1 << 20


class CsvFile:
    """Appends whole rows to one CSV file.

    Guarantees: the header is written once, when the file is new or empty; a torn or
    NUL-padded last row (power loss, full disk) is cut off when the file is opened; a
    write that fails half-way is undone, so the file always ends on a whole row; and only
    one writer at a time has a file (an exclusive lock, released when the process dies).

    A file that begins with `legacy` (the header of an earlier release, whose rows lack
    columns this one writes) is opened, locked, but marked `outdated` rather than written
    to: its owner moves it aside and starts a new file (see logger.sink), since appending
    rows of another shape would make the file unreadable as one CSV.
    """

    def __init__(
        self,
        path: Path,
        header: str = CSV_HEADER,
        owner: str = "process",
        option: str | None = None,
        legacy: str | None = None,
    ) -> None:
        """`owner` and `option` name, in the error for a file in use, who writes it and
        the setting that gives each one a file of its own."""
        self.path = path
        self.header = header
        self.legacy = legacy
        self.outdated = False
        self.owner = owner
        self.option = option
        self._fd: int | None = None
        self._size = 0

    def open(self) -> None:
        """Open for appending; raise StartupError with a one-line reason if that is impossible."""
        self._fd = open_exclusive(
            self.path,
            os.O_RDWR | os.O_APPEND,
            f"cannot open CSV {self.path}",
            f"{self.path} is already being written by another {self.owner}"
            + (f"; give each {self.owner} its own {self.option}" if self.option else ""),
        )
        try:
            self._size = self._repair_tail()
            self._check_header()
            if self._size == 0:
                self._append((self.header + "\n").encode())
        except OSError as exc:
            self.close()
            raise StartupError(f"cannot prepare CSV {self.path}: {exc.strerror or exc}") from None
        except StartupError:
            self.close()
            raise

    def write(self, data: bytes) -> None:
        """Append rows in one go; on error, cut the file back to where it was and re-raise."""
        assert not self.outdated, "rows of this release must not go to an outdated file"
        self._append(data)

    @property
    def size(self) -> int:
        return self._size

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def sync(self) -> None:
        """Make what was written durable (fsync)."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the lock
            self._fd = None

    def _append(self, data: bytes) -> None:
        assert self._fd is not None, "file is not open"
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError as exc:
                log.error("could not undo a partial write to %s: %s", self.path, exc)
            raise
        self._size += len(data)

    def _repair_tail(self) -> int:
        """Drop NUL padding and a last row without its newline; return the resulting size."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return 0
        start = max(0, size - _TAIL_SCAN)
        tail = os.pread(self._fd, size - start, start)
        kept = tail.rstrip(b"\0")
        if not kept.endswith(b"\n"):
            cut = kept.rfind(b"\n")
            kept = kept[: cut + 1] if cut >= 0 else b""
            if cut < 0 and start > 0:
                raise OSError(f"no complete row in the last {_TAIL_SCAN} bytes")
        new_size = start + len(kept)
        if new_size != size:
            os.ftruncate(self._fd, new_size)
            log.warning(
                "%s ended in a torn row: cut %d byte(s), now %d bytes",
                self.path,
                size - new_size,
                new_size,
            )
        return new_size

    def _check_header(self) -> None:
        assert self._fd is not None
        if self._size == 0:
            return
        first = os.pread(self._fd, len(self.header) + 1, 0)
        if first == (self.header + "\n").encode():
            return
        if self.legacy is not None and first.startswith((self.legacy + "\n").encode()):
            self.outdated = True
            return
        shown = first.split(b"\n", 1)[0].decode("utf-8", "replace")
        raise StartupError(
            f"{self.path} has header {shown!r}, expected {self.header!r}; "
            f"move it aside or choose another {self.option or 'file'}"
        )
