"""The files one logger writes: the CSV (rotated when due), its windows and its gaps.

Rows go first, then the window and gap records that refer to them, so a record never
points at rows that are not on disk. Data is fsynced on the configured policy.
"""

from __future__ import annotations

import logging
import os
import re
import time

from common.windows import HEADER as WINDOWS_HEADER
from common.windows import windows_path
from logger.config import LoggerConfig
from logger.recovery import GAPS_HEADER, gaps_path
from logger.sink import CsvSink, rotated_files

log = logging.getLogger(__name__)


class Outputs:
    def __init__(self, config: LoggerConfig) -> None:
        self.config = config
        self.csv = CsvSink(config.csv)
        self.windows = CsvSink(windows_path(config.csv), header=WINDOWS_HEADER)
        self.gaps = CsvSink(gaps_path(config.csv), header=GAPS_HEADER)
        self.csv.open()  # first: it holds the lock that keeps a second logger out
        try:
            self.windows.open()
            self.gaps.open()
        except BaseException:
            self.close()
            raise
        self.rows_written = 0
        self._opened = time.monotonic()
        self._synced = time.monotonic()

    def write_rows(self, rows: bytes, count: int) -> None:
        """Append rows, rotating first if due; on OSError nothing partial is left behind."""
        if self._rotation_due(len(rows)):
            self.rotate()
        self.csv.write(rows)
        self.rows_written += count

    def write_windows(self, records: bytes) -> None:
        self.windows.write(records)

    def write_gaps(self, records: bytes) -> None:
        self.gaps.write(records)

    def _rotation_due(self, incoming: int) -> bool:
        config = self.config
        if self.csv.size <= len(self.csv.header) + 1:
            return False  # never rotate a file with no rows
        if config.rotate_bytes and self.csv.size + incoming > config.rotate_bytes:
            return True
        return bool(config.rotate_seconds) and (
            time.monotonic() - self._opened >= config.rotate_seconds
        )

    def rotate(self) -> None:
        """Rename the live file to the next numbered part and start a new live file.

        A crash between the two steps leaves no live file; the next start creates it and
        reads the last seqs from the newest part.
        """
        live = self.config.csv
        parts = rotated_files(live)
        number = int(re.findall(r"-(\d+)", parts[-1].stem)[-1]) + 1 if parts else 1
        target = live.with_name(f"{live.stem}-{number:06d}{live.suffix}")
        self.csv.sync()
        os.rename(live, target)
        fresh = CsvSink(live)
        fresh.open()
        self.csv.close()
        self.csv = fresh
        self._opened = time.monotonic()
        log.info("rotated %s to %s", live, target.name)

    def sync_if_due(self) -> None:
        every = self.config.fsync_seconds
        if every is None:
            return
        now = time.monotonic()
        if now - self._synced >= every:
            for sink in (self.csv, self.windows, self.gaps):
                sink.sync()
            self._synced = now

    def close(self) -> None:
        for sink in (self.gaps, self.windows, self.csv):
            if sink.is_open:
                if self.config.fsync_seconds is not None:
                    sink.sync()
                sink.close()
