"""The logger's write path: one sink for everything a logger writes.

Rows go to the CSV (rotated when due), ended anomaly events to the windows file, and
what could not be logged to the gaps file (see logger.files for the names).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque

from common import render, schema
from common.errors import StartupError
from common.logs import Every
from common.windows import HEADER as WINDOWS_HEADER
from common.windows import Window, WindowTracker, windows_path
from logger.config import LoggerConfig
from logger.files import GAPS_HEADER, CsvFile, gaps_path, rotated_files
from logger.seqs import Gap

log = logging.getLogger(__name__)


class LogSink:
    """Writes a logger's rows, anomaly windows and gap records, in batches.

    Guarantees: rows are written whole and in the order given, all pending rows in one
    write; a window or gap record is written only after the rows it refers to; a write
    that fails (disk full) leaves no partial row and keeps everything pending, to be
    retried at the next flush (beyond `max_pending_rows` the oldest rows are discarded,
    counted in `discarded`, and later found by the seq check as gaps); `close()` writes
    what is pending, closes the open anomaly windows and makes the files durable unless
    fsync is off. Only one sink at a time may write a CSV (it holds its lock).
    """

    def __init__(self, config: LoggerConfig) -> None:
        self.config = config
        self.csv = CsvFile(config.log_path, legacy=schema.LEGACY_CSV_HEADER)
        self.csv.open()  # first: it holds the lock that keeps a second logger out
        if self.csv.outdated:  # an earlier release's log: kept whole as a part, then a new file
            try:
                self._rotate(
                    "its header lacks the anomaly_metrics column (written by an earlier release)"
                )
            except OSError as exc:
                self.csv.close()
                raise StartupError(
                    f"cannot move {config.log_path} aside: {exc.strerror or exc}"
                ) from None
        self._windows_file = CsvFile(windows_path(config.log_path), header=WINDOWS_HEADER)
        self._gaps_file = CsvFile(gaps_path(config.log_path), header=GAPS_HEADER)
        try:
            self._windows_file.open()
            self._gaps_file.open()
        except BaseException:
            self._close_files()
            raise
        self._events = WindowTracker()
        # Batches are kept as records and rendered together when written: rendering has a
        # fixed cost per call (~1 ms), which per message would dominate at a thousand
        # small messages a second.
        self._batches: deque[schema.Batch] = deque()
        self._windows: list[Window] = []  # ended with the rows pending now
        self._gaps: list[str] = []  # gap records found with the rows pending now
        self.rows_pending = 0
        self.pending_since: float | None = None  # monotonic time the oldest pending row came
        self.rows_written = 0
        self.gaps_recorded = 0
        self.discarded = 0
        self._opened = self._synced = time.monotonic()
        self._failures = Every(10.0)

    def write_batch(self, batch: schema.Batch) -> None:
        """Queue new rows (the caller has dropped duplicates) and the events they end."""
        self._windows.extend(self._events.update(batch))
        if not len(batch):
            return
        self._batches.append(batch)
        self.rows_pending += len(batch)
        if self.pending_since is None:
            self.pending_since = time.monotonic()
        while self.rows_pending > self.config.max_pending_rows:
            dropped = len(self._batches.popleft())
            self.rows_pending -= dropped
            self.discarded += dropped
            log.error(
                "pending rows over %d: discarded %d oldest row(s)",
                self.config.max_pending_rows,
                dropped,
            )

    def write_gaps(self, gaps: list[tuple[Gap, str]], precision: int) -> None:
        """Queue gap records (with their reasons), written after the rows now pending."""
        for gap, reason in gaps:
            self.gaps_recorded += 1
            self._gaps.append(gap.row(reason, precision))

    def flush_due(self, now: float) -> bool:
        """Enough rows, or rows old enough, or gap records with no rows to wait for."""
        return (
            self.rows_pending >= self.config.batch_rows
            or (
                self.pending_since is not None
                and now - self.pending_since >= self.config.flush_interval
            )
            or (bool(self._gaps) and not self.rows_pending)
        )

    def flush(self) -> bool:
        """Write what is pending: rows, then windows, then gaps. If the disk refuses, keep
        what was not written, log it (once per 10 s) and return False; the next try is due
        one flush interval later."""
        try:
            self._write_pending()
        except OSError as exc:
            if self._failures(time.monotonic()):
                log.error(
                    "cannot write %s: %s; holding %d row(s) in memory and retrying",
                    self.csv.path,
                    exc.strerror or exc,
                    self.rows_pending,
                )
            self.pending_since = time.monotonic()
            return False
        return True

    def _write_pending(self) -> None:
        if self.rows_pending:
            self._write_rows(self._render(), self.rows_pending)
            self._batches.clear()
            self.rows_pending = 0
        if self._windows:
            self._windows_file.write("".join(w.row() for w in self._windows).encode())
            self._windows = []
        if self._gaps:
            self._gaps_file.write("".join(self._gaps).encode())
            self._gaps = []
        self.pending_since = None
        self._sync_if_due()

    def close(self) -> None:
        """Close the open anomaly windows, write everything pending, close the files."""
        self._windows.extend(self._events.close_all())
        try:
            if not self.flush():
                log.error("%d row(s) could not be written before exit", self.rows_pending)
        finally:
            self._close_files()

    def _render(self) -> bytes:
        """All pending rows as CSV text, in order, each batch at its own precision."""
        return b"".join(render.csv_rows(run) for run in schema.merge(list(self._batches)))

    def _write_rows(self, data: bytes, count: int) -> None:
        if self._rotation_due(len(data)):
            self._rotate()
        self.csv.write(data)
        self.rows_written += count

    def _rotation_due(self, incoming: int) -> bool:
        config = self.config
        if self.csv.size <= len(self.csv.header) + 1:
            return False  # never rotate a file with no rows
        if config.rotate_bytes and self.csv.size + incoming > config.rotate_bytes:
            return True
        return bool(config.rotate_seconds) and (
            time.monotonic() - self._opened >= config.rotate_seconds
        )

    def _rotate(self, why: str = "") -> None:
        """Rename the live file to the next numbered part and start a new live file.

        A crash between the two steps leaves no live file; the next start creates it and
        reads the last seqs from the newest part.
        """
        live = self.config.log_path
        parts = rotated_files(live)
        number = int(re.findall(r"-(\d+)", parts[-1].stem)[-1]) + 1 if parts else 1
        target = live.with_name(f"{live.stem}-{number:06d}{live.suffix}")
        self.csv.sync()
        os.rename(live, target)
        fresh = CsvFile(live)
        fresh.open()
        self.csv.close()
        self.csv = fresh
        self._opened = time.monotonic()
        if why:
            log.warning("%s: %s; moved it to %s and started a new one", live, why, target.name)
        else:
            log.info("rotated %s to %s", live, target.name)

    def _sync_if_due(self) -> None:
        every = self.config.fsync_seconds
        if every is None:
            return
        now = time.monotonic()
        if now - self._synced >= every:
            for file in (self.csv, self._windows_file, self._gaps_file):
                file.sync()
            self._synced = now

    def _close_files(self) -> None:
        for file in (self._gaps_file, self._windows_file, self.csv):
            if file.is_open:
                if self.config.fsync_seconds is not None:
                    file.sync()
                file.close()
