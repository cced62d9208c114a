"""The names of a logger's files, and what their last row says.

Beside `stream_log.csv` are `stream_log.windows.csv` (anomaly windows), `stream_log.gaps.csv`
(what could not be logged) and, with rotation, `stream_log-000001.csv`, ... (older parts).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from common import schema


def gaps_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".gaps.csv")


def last_precision(path: Path) -> int | None:
    """The timestamp precision of a CSV's last row (None: no row): a timestamp, never
    quoted, is 19 characters in whole seconds and 23 with milliseconds."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - 4096))
            lines = [line for line in file.read().splitlines() if line.strip(b"\0")]
    except OSError:
        return None
    if not lines or lines[-1].startswith(b"timestamp,"):
        return None
    stamp = lines[-1].split(b",", 1)[0]
    return schema.MILLISECONDS if len(stamp) > 19 else schema.SECONDS


def rotated_files(live: Path) -> list[Path]:
    """Rotated parts of a log, oldest first: `stream_log-000001.csv`, `stream_log-000002.csv`..."""
    pattern = re.compile(re.escape(live.stem) + r"-(\d{6,})" + re.escape(live.suffix) + "$")
    found = [
        (int(m[1]), p)
        for p in live.parent.glob(f"{live.stem}-*{live.suffix}")
        if (m := pattern.match(p.name))
    ]
    return [p for _, p in sorted(found)]


_PART = re.compile(r"^(?P<stem>.+)-(?P<number>\d{6,})$")
_SHARD = re.compile(r"^(?P<base>.+)\.(?P<index>\d+)-of-(?P<count>\d+)$")
_SIDE_FILES = (".windows", ".gaps")


def families(paths: list[Path]) -> dict[Path, list[Path]]:
    """The given CSVs grouped by the log they belong to, each oldest part first.

    A rotated part `stream_log-000002.csv` belongs to `stream_log.csv`, after part 1 and
    before the live file; windows and gaps files are left out, so `data/stream_log*.csv`
    names every part of every logger's log."""
    found: dict[Path, list[tuple[int, Path]]] = {}
    for path in paths:
        if path.stem.endswith(_SIDE_FILES):
            continue
        match = _PART.match(path.stem)
        if match:
            live, order = path.with_name(match["stem"] + path.suffix), int(match["number"])
        else:
            live, order = path, 1 << 62  # the live file comes after its parts
        found.setdefault(live, []).append((order, path))
    return {live: [p for _, p in sorted(parts)] for live, parts in sorted(found.items())}


def base_name(live: Path) -> str:
    """The log's name without a logger's shard: `stream_log` for `stream_log.2-of-3.csv`."""
    match = _SHARD.match(live.stem)
    return match["base"] if match else live.stem
