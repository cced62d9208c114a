"""Anomaly windows: the span of each labelled event, kept beside a CSV log.

`data/stream_log.csv` gets `data/stream_log.windows.csv`, one row per event:
anomaly_id, device, kind, metrics (`cpu|net`), start and end (timestamps of its first
and last labelled sample, as the CSV shows them, in UTC and one format:
`2025-08-04 00:05:08.000Z`), the number of labelled samples and root (the anomaly_id of
its root cause; its own for a root). A backfill's rows are in order of start; a live
logger writes each row as its event ends. An event seen in parts (a logger restart, or a sample
inside it that the anomaly left unchanged) has several rows with the same anomaly_id;
`merge` joins them.

Planned events (maintenance, deploy, load_test: `event` labels) get rows too, with the
event's name as kind, no metrics and no root, and an id of their own made from the device,
the kind and the first sample's time: a run of consecutive samples (by seq) of a device
with the same event label is one row.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common import schema

if TYPE_CHECKING:
    import pandas as pd

HEADER = "anomaly_id,device,kind,metrics,start,end,samples,root"
EVENT_ID_BASE = 1 << 62  # planned events' ids: [2**62, 2**63), apart from every anomaly's


def windows_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".windows.csv")


def utc_timestamp(ts_ms: int, precision: int) -> str:
    """A window's start or end as the CSV shows the sample (floored to its precision), in one
    format for the whole file whatever the rate: `2025-08-04 00:05:08.000Z` (UTC, says
    so), so pandas reads every row as a UTC time."""
    if precision == schema.SECONDS:
        ts_ms -= ts_ms % 1000
    return schema.format_timestamp(ts_ms, schema.MILLISECONDS) + "Z"


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
    root: int = 0  # 0: none (an event)
    last_seq: int = -1  # of an event's last sample: the next one must follow it

    def row(self) -> str:
        stamps = [utc_timestamp(t, self.precision) for t in (self.start_ms, self.end_ms)]
        device = schema.csv_field(self.device)
        root = self.root or ""
        fields = (self.anomaly_id, device, self.kind, self.metrics, *stamps, self.samples, root)
        return ",".join(map(str, fields)) + "\n"


def event_id(device: bytes, code: int, start_ms: int) -> int:
    """A planned event's id: the same wherever its first sample is seen (logger, backfill)."""
    digest = hashlib.blake2b(
        device.rstrip(b"\0") + bytes([code]) + start_ms.to_bytes(8, "little", signed=True),
        digest_size=8,
    ).digest()
    return EVENT_ID_BASE | (int.from_bytes(digest, "little") >> 2)


class WindowTracker:
    """Follows labelled samples batch by batch and reports each event when it ends."""

    def __init__(self) -> None:
        self.open: dict[bytes, Window] = {}
        self.open_events: dict[bytes, Window] = {}

    def update(self, batch: schema.Batch) -> list[Window]:
        """Windows that ended with this batch (a device moved on to another label or none)."""
        closed = self._anomalies(batch)
        marked = np.flatnonzero(batch.rows["event"])
        if len(marked) or self.open_events:
            closed += self._events(batch, marked)
        return closed

    def _anomalies(self, batch: schema.Batch) -> list[Window]:
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
                        root=int(first["anomaly_root"]),
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

    def _events(self, batch: schema.Batch, marked: np.ndarray) -> list[Window]:
        """Planned events: runs of a device's consecutive samples with one event label."""
        rows = batch.rows
        closed: list[Window] = []
        if len(marked):
            sub = rows[marked]
            names, device = np.unique(sub["device"], return_inverse=True)
            order = np.lexsort((np.arange(len(sub)), device))
            sub, device = sub[order], device[order]
            code, seq = sub["event"], sub["seq"]
            breaks = np.flatnonzero(
                np.r_[
                    True,
                    (device[1:] != device[:-1])
                    | (code[1:] != code[:-1])
                    | (seq[1:] != seq[:-1] + np.uint64(1)),
                ]
            )
            ends = np.r_[breaks[1:], len(sub)] - 1
            for start, end in sorted(zip(breaks, ends, strict=True), key=lambda se: order[se[0]]):
                first, last = sub[start], sub[end]
                name = bytes(names[device[start]])
                kind = schema.EVENT_KINDS[first["event"] - 1]
                window = self.open_events.get(name)
                if window is not None and (
                    window.kind != kind or window.last_seq + 1 != int(first["seq"])
                ):
                    closed.append(self.open_events.pop(name))
                    window = None
                if window is None:
                    window = self.open_events[name] = Window(
                        anomaly_id=event_id(name, int(first["event"]), int(first["ts_ms"])),
                        device=schema.device_name(name),
                        kind=kind,
                        metrics="",
                        start_ms=int(first["ts_ms"]),
                        end_ms=int(first["ts_ms"]),
                        samples=0,
                        precision=batch.precision,
                    )
                window.end_ms = int(last["ts_ms"])
                window.last_seq = int(last["seq"])
                window.samples += int(end - start + 1)
        if self.open_events:
            latest = _latest_rows(rows, list(self.open_events))
            for name, row in latest.items():
                if int(rows["seq"][row]) != self.open_events[name].last_seq:
                    closed.append(self.open_events.pop(name))
        return closed

    def close_all(self) -> list[Window]:
        closed = [*self.open.values(), *self.open_events.values()]
        self.open.clear()
        self.open_events.clear()
        return closed

    def earliest_open_ms(self) -> int | None:
        """The start of the earliest window still open (None: none is)."""
        starts = [w.start_ms for w in (*self.open.values(), *self.open_events.values())]
        return min(starts, default=None)


class StartOrder:
    """Windows in order of their start, for a file written at once (a backfill): a closed
    window is held until no open one started before it. A live log writes each window as
    it ends instead, so that a crash loses none that ended."""

    def __init__(self) -> None:
        self._held: list[tuple[int, str, int, Window]] = []

    def add(self, windows: list[Window], tracker: WindowTracker) -> list[Window]:
        """Hold `windows` (just closed); return those now due, in order of start."""
        for window in windows:
            heapq.heappush(self._held, (window.start_ms, window.device, window.anomaly_id, window))
        due = tracker.earliest_open_ms()
        out = []
        while self._held and (due is None or self._held[0][0] < due):
            out.append(heapq.heappop(self._held)[3])
        return out


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
    """One row per anomaly or planned event from windows files (parts joined by anomaly_id)."""
    import pandas as pd  # only here: importing it costs the services 0.3 s at start-up

    paths = [paths] if isinstance(paths, Path) else paths
    frame = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    for column in ("start", "end"):  # UTC; files written before they said so are UTC too
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    if "root" not in frame:  # written before roots were kept
        frame["root"] = pd.NA
    return (
        frame.groupby("anomaly_id", sort=False)
        .agg(
            device=("device", "first"),
            kind=("kind", "first"),
            metrics=("metrics", "first"),
            start=("start", "min"),
            end=("end", "max"),
            samples=("samples", "sum"),
            root=("root", "first"),
        )
        .reset_index()
        .sort_values(["start", "device"])
    )


def to_nab(paths: Path | list[Path], log_name: str) -> str:
    """NAB's combined_windows.json shape: {data file: [[start, end], ...]}, one file per
    device, named `<log_name>/<device>.csv`."""
    windows: dict[str, list[list[str]]] = {}
    merged = merge(paths)
    for row in merged[~merged["kind"].isin(schema.EVENT_KINDS)].itertuples():
        key = f"{log_name}/{row.device}.csv"
        windows.setdefault(key, []).append(
            [row.start.strftime("%Y-%m-%d %H:%M:%S.%f"), row.end.strftime("%Y-%m-%d %H:%M:%S.%f")]
        )
    return json.dumps(windows, indent=4)
