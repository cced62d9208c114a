"""Anomaly windows: the span of each labelled event, kept beside a CSV log.

`data/stream_log.csv` gets `data/stream_log.windows.csv`, one row per event:
anomaly_id, device, kind, metrics (`cpu|net`), start and end (timestamps of its first
and last labelled sample) and the number of labelled samples. An event seen in parts
(a logger restart, or a sample inside it that the anomaly left unchanged) has several
rows with the same anomaly_id; `merge` joins them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common import schema

if TYPE_CHECKING:
    import pandas as pd

HEADER = "anomaly_id,device,kind,metrics,start,end,samples"


def windows_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".windows.csv")


@dataclass
class Window:
    anomaly_id: int
    device: str
    kind: str
    metrics: str
    start_ms: int
    end_ms: int
    samples: int
    precision: int

    def row(self) -> str:
        stamps = schema.format_timestamps(
            schema.Batch(_stamp_rows([self.start_ms, self.end_ms]), self.precision)
        )
        device = schema.csv_field(self.device)
        fields = (self.anomaly_id, device, self.kind, self.metrics, *stamps, self.samples)
        return ",".join(map(str, fields)) + "\n"


def _stamp_rows(ts: list[int]) -> np.ndarray:
    rows = schema.empty_rows(len(ts))
    rows["ts_ms"] = ts
    return rows


class WindowTracker:
    """Follows labelled samples batch by batch and reports each event when it ends."""

    def __init__(self) -> None:
        self.open: dict[bytes, Window] = {}

    def update(self, batch: schema.Batch) -> list[Window]:
        """Windows that ended with this batch (a device moved on to another label or none)."""
        rows = batch.rows
        closed: list[Window] = []
        ids = rows["anomaly_id"]
        labelled = np.flatnonzero(ids > 0)
        if len(labelled):
            # Group the labelled rows by event; visit events in order of appearance.
            grouped = labelled[np.argsort(ids[labelled], kind="stable")]
            grouped_ids = ids[grouped]
            starts = np.flatnonzero(np.r_[True, grouped_ids[1:] != grouped_ids[:-1]])
            ends = np.r_[starts[1:], len(grouped)] - 1
            for start, end in sorted(zip(starts, ends, strict=True), key=lambda se: grouped[se[0]]):
                first, last = rows[grouped[start]], rows[grouped[end]]
                device = bytes(first["device"])
                window = self.open.get(device)
                if window is not None and window.anomaly_id != int(first["anomaly_id"]):
                    closed.append(self.open.pop(device))
                    window = None
                if window is None:
                    window = self.open[device] = Window(
                        anomaly_id=int(first["anomaly_id"]),
                        device=schema.device_name(device),
                        kind=schema.ANOMALY_KINDS[first["anomaly"] - 1],
                        metrics="|".join(schema.metric_names(int(first["anomaly_metrics"]))),
                        start_ms=int(first["ts_ms"]),
                        end_ms=int(first["ts_ms"]),
                        samples=0,
                        precision=batch.precision,
                    )
                window.end_ms = int(last["ts_ms"])
                window.samples += int(end - start + 1)
        # A window stays open only while its device's latest sample still carries its id.
        if self.open:
            latest = _latest_rows(rows, list(self.open))
            for device, row in latest.items():
                if ids[row] != self.open[device].anomaly_id:
                    closed.append(self.open.pop(device))
        return closed

    def close_all(self) -> list[Window]:
        closed = list(self.open.values())
        self.open.clear()
        return closed


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _hashes(devices: np.ndarray) -> np.ndarray:
    """A 64-bit hash per device id, from its eight 8-byte words (most are zero padding)."""
    words = np.ascontiguousarray(devices, schema.DEVICE_DTYPE).view(np.uint64)
    words = words.reshape(len(devices), -1)
    hashes = words[:, 0].copy()
    for column in range(1, words.shape[1]):
        hashes = (hashes * _MIX) ^ words[:, column]
    return hashes


def _latest_rows(rows: np.ndarray, devices: list[bytes]) -> dict[bytes, int]:
    """Index of each device's last row in the batch (devices without rows left out).

    One sort of a 64-bit hash of the device ids, instead of a string comparison over the
    whole batch per device; every hit is checked against the id itself.
    """
    n = len(rows)
    if not n:
        return {}
    hashes = _hashes(rows["device"])
    unique, first_reversed = np.unique(hashes[::-1], return_index=True)
    wanted_hashes = _hashes(np.array(devices, schema.DEVICE_DTYPE))
    at = np.minimum(np.searchsorted(unique, wanted_hashes), len(unique) - 1)
    latest = {}
    for device, i, found in zip(devices, at.tolist(), unique[at] == wanted_hashes, strict=True):
        if not found:
            continue
        row = n - 1 - int(first_reversed[i])
        if rows["device"][row] != device:  # two ids with one hash: look the slow way
            mine = np.flatnonzero(rows["device"] == device)
            if not len(mine):
                continue
            row = int(mine[-1])
        latest[device] = row
    return latest


def merge(paths: Path | list[Path]) -> pd.DataFrame:
    """One row per event from windows files (parts joined by anomaly_id)."""
    import pandas as pd  # only here: importing it costs the services 0.3 s at start-up

    paths = [paths] if isinstance(paths, Path) else paths
    frame = pd.concat(
        [pd.read_csv(p, parse_dates=["start", "end"]) for p in paths], ignore_index=True
    )
    return (
        frame.groupby("anomaly_id", sort=False)
        .agg(
            device=("device", "first"),
            kind=("kind", "first"),
            metrics=("metrics", "first"),
            start=("start", "min"),
            end=("end", "max"),
            samples=("samples", "sum"),
        )
        .reset_index()
        .sort_values(["start", "device"])
    )


def to_nab(paths: Path | list[Path], log_name: str) -> str:
    """NAB's combined_windows.json shape: {data file: [[start, end], ...]}, one file per
    device, named `<log_name>/<device>.csv`."""
    windows: dict[str, list[list[str]]] = {}
    for row in merge(paths).itertuples():
        key = f"{log_name}/{row.device}.csv"
        windows.setdefault(key, []).append(
            [row.start.strftime("%Y-%m-%d %H:%M:%S.%f"), row.end.strftime("%Y-%m-%d %H:%M:%S.%f")]
        )
    return json.dumps(windows, indent=4)
