"""The logger's write path: one sink for everything a logger writes.

Rows go to the CSV (rotated when due), ended anomaly events to the windows file, and
what could not be logged to the gaps file (see logger.files for the names).

A CSV holds one series and one timestamp format (common.logseries records both beside
it): rows of another format (the rate crossed 1 Hz) or of another series (the producers
were restarted with another seed, fleet, scenario or source) start a new file, the
current one becoming the next numbered part, so `pd.read_csv(path,
parse_dates=["timestamp"])` always gives datetimes and no file mixes unrelated data.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from pathlib import Path

from common import logseries, render, schema
from common.csvfile import CsvFile
from common.errors import StartupError
from common.logs import Every
from common.windows import HEADER as WINDOWS_HEADER
from common.windows import Window, WindowTracker, windows_path
from delivery import gaps
from delivery.gaps import GapRecord
from logger.config import LoggerConfig
from logger.files import gaps_path, last_precision, rotated_files

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
        self.csv = _csv(config.log_path, legacy=schema.LEGACY_CSV_HEADER)
        self.csv.open()  # first: it holds the lock that keeps a second logger out
        self.series: dict | None = None  # the file's series, read below (None: not known yet)
        self.precision: int | None = None  # its timestamps'
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
        self._windows_file = _csv(windows_path(config.log_path), WINDOWS_HEADER)
        self._gaps_file = gaps.gaps_file(gaps_path(config.log_path), *_OWNER)
        try:
            self._windows_file.open()
            self._gaps_file.open()
        except BaseException:
            self._close_files()
            raise
        record = logseries.read(config.log_path)
        self.series = record.get("series")
        self.precision = logseries.precision_of(record)
        if self.precision is None:
            self.precision = last_precision(config.log_path)
        self._disagreeing: list[dict] = []  # producers seen naming different series
        self._events = WindowTracker()
        # Batches are kept as records and rendered together when written: rendering has a
        # fixed cost per call (~1 ms), which per message would dominate at a thousand
        # small messages a second.
        self._batches: deque[schema.Batch] = deque()
        self._windows: list[Window] = []  # ended with the rows pending now
        self._gaps: list[bytes] = []  # gap records found with the rows pending now
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

    def write_gaps(self, records: list[GapRecord], precision: int) -> None:
        """Queue gap records, written after the rows now pending."""
        if records:
            self.gaps_recorded += len(records)
            self._gaps.append(gaps.rows(records, precision))

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

    def is_new_series(self, named: list[dict]) -> bool:
        """Whether the producers name another series than this file's (follow_series would
        start a new file)."""
        return bool(named) and self.series is not None and self.series not in named

    def follow_series(self, named: list[dict]) -> bool:
        """The producers name the series they publish: a file records the first it gets;
        if they name another than the file's, what is pending is written, and a new file
        begins (announced). True when a new file began for a new series."""
        if not named or self.series in named:
            return False
        if len(named) > 1 and named != self._disagreeing:
            self._disagreeing = named
            log.warning(
                "the producers publish different series: %s",
                "; ".join(logseries.describe(n) for n in named),
            )
        new = named[0]
        if self.series is None:
            self.series = new
            self._save_record()
            log.info("logging series %s to %s", logseries.describe(new), self.csv.path)
            return False
        log.warning(
            "new series: %s (%s held %s): it starts a new file",
            logseries.describe(new),
            self.csv.path,
            logseries.describe(self.series),
        )
        self._windows.extend(self._events.close_all())  # its events end with it
        self.flush()  # the old series' rows go to the old file
        if self._has_rows():
            self._rotate("a new series")
        self.series = new
        self.precision = None
        self._save_record()
        return True

    def _write_pending(self) -> None:
        while self._batches:
            # One timestamp format per write: a change of format starts a new file.
            precision = self._batches[0].precision
            n = 0
            while n < len(self._batches) and self._batches[n].precision == precision:
                n += 1
            run = [self._batches[i] for i in range(n)]
            count = sum(len(b) for b in run)
            data = b"".join(render.csv_rows(part) for part in schema.merge(run))
            self._write_rows(data, count, precision)
            for _ in range(n):  # written: no longer pending (a failure above keeps them)
                self._batches.popleft()
            self.rows_pending -= count
        if self._windows:
            self._windows_file.write("".join(w.row() for w in self._windows).encode())
            self._windows = []
        if self._gaps:
            self._gaps_file.write(b"".join(self._gaps))
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

    def _write_rows(self, data: bytes, count: int, precision: int) -> None:
        if self.precision is not None and precision != self.precision and self._has_rows():
            self._rotate(f"timestamps now in {logseries.FORMATS[precision]}")
        elif self._rotation_due(len(data)):
            self._rotate()
        self.csv.write(data)
        self.rows_written += count
        if precision != self.precision:
            self.precision = precision
            self._save_record()

    def _has_rows(self) -> bool:
        return self.csv.size > len(self.csv.header) + 1

    def _save_record(self) -> None:
        logseries.write(self.config.log_path, self.series, self.precision)

    def _rotation_due(self, incoming: int) -> bool:
        config = self.config
        if not self._has_rows():
            return False  # never rotate a file with no rows
        if config.rotate_bytes and self.csv.size + incoming > config.rotate_bytes:
            return True
        return bool(config.rotate_seconds) and (
            time.monotonic() - self._opened >= config.rotate_seconds
        )

    def _rotate(self, why: str = "") -> None:
        """Rename the live file (and its series record) to the next numbered part and start
        a new live file.

        A crash between the two steps leaves no live file; the next start creates it and
        reads the last seqs from the newest part.
        """
        live = self.config.log_path
        parts = rotated_files(live)
        number = int(re.findall(r"-(\d+)", parts[-1].stem)[-1]) + 1 if parts else 1
        target = live.with_name(f"{live.stem}-{number:06d}{live.suffix}")
        self.csv.sync()
        os.rename(live, target)
        if logseries.record_path(live).exists():  # a crash just before: verify copes
            os.replace(logseries.record_path(live), logseries.record_path(target))
        fresh = _csv(live)
        fresh.open()
        self.csv.close()
        self.csv = fresh
        self._opened = time.monotonic()
        self.precision = None
        self._save_record()
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


_OWNER = ("logger", "--csv")  # who writes a logger's files, and how each gets its own


def _csv(path: Path, header: str = schema.CSV_HEADER, legacy: str | None = None) -> CsvFile:
    return CsvFile(path, header, *_OWNER, legacy=legacy)
