"""The CSV sink: one header, appends, repaired tails, undone partial writes, one writer."""

from __future__ import annotations

import resource
import signal

import pandas as pd
import pytest

from common.csvfile import CsvFile
from common.errors import StartupError
from common.schema import CSV_HEADER

ROW = "2025-08-03 14:00:00,47.2,62.1,120.0,58.0,host-01,{},,\n"


def rows(first: int, count: int) -> bytes:
    return "".join(ROW.format(seq) for seq in range(first, first + count)).encode()


def write(path, text: bytes) -> None:
    sink = CsvFile(path)
    sink.open()
    try:
        sink.write(text)
    finally:
        sink.close()


def test_new_file_gets_one_header_and_reopening_appends(tmp_path):
    """A restarted logger appends without writing a second header."""
    path = tmp_path / "sub" / "log.csv"
    write(path, rows(0, 2))
    write(path, rows(2, 3))
    lines = path.read_text().splitlines()
    assert lines[0] == CSV_HEADER
    assert lines.count(CSV_HEADER) == 1
    assert len(lines) == 6
    frame = pd.read_csv(path, parse_dates=["timestamp"])
    assert frame["seq"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "tail",
    [
        "2025-08-03 14:00:0",  # truncated inside the last row
        "2025-08-03 14:00:00,47.2,62.1,120.0,58.0,host-01,5,\0\0\0",  # torn then NUL-padded
        "\0" * 4096,  # NUL padding after a whole row
    ],
)
def test_torn_tail_is_cut_at_open(tmp_path, tail):
    """A torn or NUL-padded last row is removed; whole rows before it are kept."""
    path = tmp_path / "log.csv"
    path.write_bytes((CSV_HEADER + "\n").encode() + rows(0, 3) + tail.encode())
    write(path, rows(3, 1))
    frame = pd.read_csv(path)
    assert frame["seq"].tolist() == [0, 1, 2, 3]


def test_torn_header_is_rewritten(tmp_path):
    """A header torn before its newline is cut off at open, and the file gets a whole header
    followed by the new rows."""
    path = tmp_path / "log.csv"
    path.write_text("timestamp,cp")
    write(path, rows(0, 1))
    assert path.read_bytes() == (CSV_HEADER + "\n").encode() + rows(0, 1)


def test_foreign_header_is_refused(tmp_path):
    """A file that is not ours is never appended to."""
    path = tmp_path / "log.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(StartupError, match="expected 'timestamp,cpu,mem"):
        CsvFile(path).open()
    assert path.read_text() == "a,b,c\n1,2,3\n"


def test_second_writer_is_refused(tmp_path):
    """While one CsvFile has a path open, opening it again raises StartupError, and the path can be
    written once the first one closes."""
    path = tmp_path / "log.csv"
    first = CsvFile(path)
    first.open()
    try:
        with pytest.raises(StartupError, match="already being written"):
            CsvFile(path).open()
    finally:
        first.close()
    write(path, rows(0, 1))  # free again once the first one closed


def test_unwritable_location_is_a_startup_error(tmp_path):
    """A CSV path under a regular file, whose directory cannot be made, raises StartupError
    "cannot open CSV" instead of an OSError."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StartupError, match="cannot open CSV"):
        CsvFile(blocker / "log.csv").open()


def test_failed_write_is_undone(tmp_path):
    """When the disk refuses part of a batch, the file still ends on a whole row."""
    path = tmp_path / "log.csv"
    sink = CsvFile(path)
    sink.open()
    sink.write(rows(0, 2))
    good_size = path.stat().st_size
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (good_size + 100, old_limit[1]))
    try:
        with pytest.raises(OSError):
            sink.write(rows(2, 50))  # ~2.5 KB: only part of it fits
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.stat().st_size == good_size
    sink.write(rows(2, 1))  # and it recovers once there is room
    sink.close()
    assert pd.read_csv(path)["seq"].tolist() == [0, 1, 2]


def test_log_sink_writes_rows_in_order_at_their_precision_across_a_failed_write(tmp_path):
    """LogSink renders pending records when it writes: the same text in the same order, each
    batch at its own timestamp precision, a change of precision starting a new file (one
    format per file), and a write the disk refuses keeps every row for the next flush."""
    import numpy as np

    from common import render, schema
    from logger.config import LoggerConfig
    from logger.sink import LogSink

    def batch(first: int, n: int, precision: int) -> schema.Batch:
        rows = schema.empty_rows(n)
        rows["ts_ms"] = 1_800_000_000_123 + np.arange(first, first + n) * 1000
        rows["seq"] = np.arange(first, first + n)
        rows["device"] = b"host-01"
        rows["cpu"] = 12.5
        return schema.Batch(rows, precision)

    parts = [
        batch(0, 3, schema.SECONDS),
        batch(3, 100, schema.SECONDS),
        batch(103, 2, schema.MILLISECONDS),
        batch(105, 1, schema.SECONDS),
    ]
    path = tmp_path / "log.csv"
    sink = LogSink(LoggerConfig(csv=path, fsync_seconds=None))
    for part in parts[:2]:
        sink.write_batch(part)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 10, old_limit[1]))
        assert sink.flush() is False  # the disk is full: nothing written, all kept
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.read_text() == CSV_HEADER + "\n" and sink.rows_pending == 103
    for part in parts[2:]:
        sink.write_batch(part)
    assert sink.flush() is True
    sink.close()
    files = [tmp_path / "log-000001.csv", tmp_path / "log-000002.csv", path]
    texts = [f.read_bytes()[len(CSV_HEADER) + 1 :] for f in files]
    assert b"".join(texts) == b"".join(render.csv_rows(p) for p in parts)
    assert [t.count(b"\n") for t in texts] == [103, 2, 1]  # seconds, milliseconds, seconds
    assert sink.rows_written == 106 and b".123," in texts[1] and b".123," not in texts[0]
