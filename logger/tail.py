"""Where a logger left off: the last seq and timestamp of each device in its CSV's tail.

Read once at start, so the logger can ask the producer for what came after. The columns
read (timestamp, device, seq) are at the same places in the CSV of this release and of
earlier ones (common.schema.LEGACY_COLUMNS: `anomaly_metrics` was added last), so the
newest part may be either.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from common import schema
from logger.files import rotated_files

_TAIL_BYTES = 16 * 1024 * 1024
_DEVICE = schema.COLUMNS.index("device")
_SEQ = schema.COLUMNS.index("seq")
_TIMESTAMP = schema.COLUMNS.index("timestamp")
_HEADERS = (schema.CSV_HEADER, schema.LEGACY_CSV_HEADER)
assert all(
    schema.LEGACY_COLUMNS.index(name) == schema.COLUMNS.index(name)
    for name in ("device", "seq", "timestamp")
)


def last_written(path: Path) -> dict[str, tuple[int, int]]:
    """Device -> (seq, timestamp ms) of its newest row in the log (empty for a new log).

    Looks at the last 16 MiB of the newest file: the live CSV, or the newest rotated part
    when the live one has no rows yet (just rotated, or crashed while rotating).
    """
    if not _has_rows(path):
        parts = rotated_files(path)
        if not parts:
            return {}
        path = parts[-1]
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        return {}
    if size > _TAIL_BYTES:
        tail = tail[tail.find(b"\n") + 1 :]  # the first line may be cut
    # Ids are quoted where they hold a comma or a quote, never a newline: lines are rows.
    lines = [line for line in tail.decode("utf-8", "replace").splitlines() if line]
    if lines and lines[0] in _HEADERS:
        lines = lines[1:]
    newest: dict[str, tuple[int, str]] = {}  # device -> (seq, timestamp text) of its last row
    for fields in csv.reader(lines):
        seq = int(fields[_SEQ])
        known = newest.get(fields[_DEVICE])
        if known is None or seq >= known[0]:
            newest[fields[_DEVICE]] = (seq, fields[_TIMESTAMP])
    stamps = np.array([ts for _, ts in newest.values()], dtype="datetime64[ms]").astype(np.int64)
    return {
        device: (seq, int(ts))
        for (device, (seq, _)), ts in zip(newest.items(), stamps, strict=True)
    }


def _has_rows(path: Path) -> bool:
    try:
        return path.stat().st_size > len(schema.CSV_HEADER) + 1
    except FileNotFoundError:
        return False
