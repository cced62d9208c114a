"""Which series a log file holds, recorded beside it: `stream_log.csv` has
`stream_log.series.json`, a rotated part `stream_log-000003.csv` has
`stream_log-000003.series.json`:

    {"series": {"source": "sim", "seed": 42, "devices": 6, "scenario": ""},
     "timestamps": "seconds"}

`series` is what the producers say they publish (producer.sources.series.identity, in their
catch-up answers); `timestamps` the one format of the file's timestamps (`seconds`,
`YYYY-MM-DD HH:MM:SS`, or `milliseconds`, `YYYY-MM-DD HH:MM:SS.fff`). The logger starts a
new file rather than mix two series or two formats in one, and `logger verify` checks the
files of each series on their own. A part without a record (a crash between renaming a
part and its record) is taken to be of its log's neighbouring part's series; a log with
no record at all (written before they were kept), of an unknown one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from common import schema

FORMATS = {schema.SECONDS: "seconds", schema.MILLISECONDS: "milliseconds"}


def record_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".series.json")


def read(csv_path: Path) -> dict:
    """The record of a log file ({} if there is none, or it cannot be read)."""
    try:
        data = json.loads(record_path(csv_path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write(csv_path: Path, series: dict | None, precision: int | None) -> None:
    """Replace the record atomically (a crash leaves the old one or the new one)."""
    body: dict = {"series": series}
    if precision is not None:
        body["timestamps"] = FORMATS[precision]
    path = record_path(csv_path)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(body) + "\n")
    os.replace(partial, path)


def precision_of(record: dict) -> int | None:
    """The timestamp precision a record names (None: not named)."""
    named = record.get("timestamps")
    return next((p for p, name in FORMATS.items() if name == named), None)


def describe(series: dict | None) -> str:
    """`sim, seed 42, 6 devices` (and the scenario), `replay of FILE`, `live metrics of HOST`."""
    if not series:
        return "not recorded"
    if series.get("source") == "replay":
        return f"replay of {series.get('file')}"
    if series.get("source") == "live":
        return f"live metrics of {series.get('host')}"
    devices = series.get("devices")
    text = f"{series.get('source')}, seed {series.get('seed')}, {devices} device"
    text += "s" * (devices != 1)
    if series.get("scenario"):
        text += f", scenario {series['scenario']!r}"
    return text
