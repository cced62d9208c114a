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

import numpy as np
import pandas as pd

from common import schema

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
        fields = (self.anomaly_id, self.device, self.kind, self.metrics, *stamps, self.samples)
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
            event_ids, first = np.unique(ids[labelled], return_index=True)
            for event_id in event_ids[np.argsort(first)]:  # in order of appearance
                mine = labelled[ids[labelled] == event_id]
                row = rows[mine[0]]
                device = bytes(row["device"])
                window = self.open.get(device)
                if window is not None and window.anomaly_id != int(event_id):
                    closed.append(self.open.pop(device))
                    window = None
                if window is None:
                    window = Window(
                        anomaly_id=int(event_id),
                        device=device.decode("ascii"),
                        kind=schema.ANOMALY_KINDS[row["anomaly"] - 1],
                        metrics="|".join(schema.metric_names(int(row["anomaly_metrics"]))),
                        start_ms=int(row["ts_ms"]),
                        end_ms=int(row["ts_ms"]),
                        samples=0,
                        precision=batch.precision,
                    )
                    self.open[device] = window
                window.end_ms = int(rows["ts_ms"][mine[-1]])
                window.samples += len(mine)
        for device, window in list(self.open.items()):
            mine = rows["device"] == device
            if mine.any() and (rows["ts_ms"][mine] > window.end_ms).any():
                later = rows[mine][rows["ts_ms"][mine] > window.end_ms]
                if (later["anomaly_id"] != window.anomaly_id).any():
                    closed.append(self.open.pop(device))
        return closed

    def close_all(self) -> list[Window]:
        closed = list(self.open.values())
        self.open.clear()
        return closed


def merge(path: Path) -> pd.DataFrame:
    """One row per event from a windows file (parts joined by anomaly_id)."""
    frame = pd.read_csv(path, parse_dates=["start", "end"])
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


def to_nab(path: Path, csv_name: str) -> str:
    """NAB's combined_windows.json shape: {data file: [[start, end], ...]}, one file per device."""
    windows: dict[str, list[list[str]]] = {}
    for row in merge(path).itertuples():
        key = f"{Path(csv_name).stem}/{row.device}.csv"
        windows.setdefault(key, []).append(
            [row.start.strftime("%Y-%m-%d %H:%M:%S.%f"), row.end.strftime("%Y-%m-%d %H:%M:%S.%f")]
        )
    return json.dumps(windows, indent=4)
