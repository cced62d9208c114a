"""An existing CSV as a source: its rows at their own pace x speed, rebased to now.

Reads this project's own logs (labels included) and the `timestamp,value` files of
public anomaly benchmarks such as NAB, whose value is mapped to one chosen metric.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common import schema
from common.errors import StartupError
from producer.series import Series
from producer.sources import build_rows

log = logging.getLogger(__name__)

# A replay starts this long after the producer, so that subscribers started with it
# (ZeroMQ's slow joiners) see the file from its first row.
GRACE_MS = 1000


@dataclass(frozen=True)
class Recording:
    """A replayable file: offsets from its first row, devices, values, labels."""

    offset_ms: np.ndarray  # from the first row, non-decreasing
    period_ms: float  # gap inserted between two loops
    devices: np.ndarray  # S16
    device_index: np.ndarray  # per row, index into the distinct devices
    distinct_devices: int
    values: np.ndarray  # (n, 4)
    anomaly: np.ndarray
    anomaly_id: np.ndarray

    @property
    def span_ms(self) -> float:
        return float(self.offset_ms[-1]) + self.period_ms

    def only(self, keep: Callable[[bytes], bool]) -> Recording | None:
        """The rows of the devices `keep` accepts (None if it accepts none of them)."""
        kept = np.array([keep(bytes(d)) for d in self.devices], bool)
        if not kept.any():
            return None
        renumber = np.cumsum(kept) - 1
        rows = kept[self.device_index]
        return Recording(
            offset_ms=self.offset_ms[rows],  # on the file's time axis, like the other shards
            period_ms=self.period_ms,
            devices=self.devices[kept],
            device_index=renumber[self.device_index[rows]],
            distinct_devices=int(kept.sum()),
            values=self.values[rows],
            anomaly=self.anomaly[rows],
            anomaly_id=self.anomaly_id[rows],
        )

    def max_rate(self, speed: float) -> float:
        """Most samples one device gets per wall second (bounds how many seqs a run uses)."""
        gaps = np.diff(self.offset_ms)
        positive = gaps[gaps > 0]
        smallest = float(positive.min()) if len(positive) else self.period_ms
        return min(1000.0, 1000.0 / max(smallest, 1.0) * speed)


def load(path: Path, metric: str) -> Recording:
    """Parse `path`; raise StartupError with one line if it is not a usable recording."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise StartupError(f"cannot read replay file {path}: {exc}") from None
    columns = set(frame.columns)
    if "timestamp" not in columns:
        raise StartupError(f"replay file {path} has no 'timestamp' column")
    try:
        stamps = pd.to_datetime(frame["timestamp"], format="mixed")
    except (ValueError, TypeError) as exc:
        raise StartupError(f"replay file {path}: unreadable timestamps ({exc})") from None
    if not len(frame):
        raise StartupError(f"replay file {path} has no rows")
    values = np.full((len(frame), len(schema.METRICS)), np.nan)
    if set(schema.METRICS) <= columns:
        for i, m in enumerate(schema.METRICS):
            values[:, i] = pd.to_numeric(frame[m], errors="coerce")
    elif "value" in columns:
        values[:, schema.METRICS.index(metric)] = pd.to_numeric(frame["value"], errors="coerce")
    else:
        raise StartupError(
            f"replay file {path} needs columns {','.join(schema.METRICS)} or 'value'"
        )
    names = (
        frame["device"].astype(str) if "device" in columns else pd.Series(["host-01"] * len(frame))
    )
    bad = [n for n in names.unique() if len(n.encode("ascii", "replace")) > schema.DEVICE_MAX_BYTES]
    if bad:
        raise StartupError(f"replay file {path}: device id {bad[0]!r} is over 16 bytes")
    distinct, device_index = np.unique(names.to_numpy(), return_inverse=True)
    anomaly = np.zeros(len(frame), np.uint8)
    anomaly_id = np.zeros(len(frame), np.uint64)
    if "anomaly" in columns:
        codes = {k: i + 1 for i, k in enumerate(schema.ANOMALY_KINDS)}
        anomaly = frame["anomaly"].map(codes).fillna(0).to_numpy(np.uint8)
        if "anomaly_id" in columns:
            anomaly_id = (
                pd.to_numeric(frame["anomaly_id"], errors="coerce").fillna(0).to_numpy(np.uint64)
            )
    order = np.argsort(stamps.to_numpy(), kind="stable")
    ms = stamps.to_numpy().astype("datetime64[ms]").astype(np.int64)[order]
    offset = ms - ms[0]
    steps = np.diff(np.unique(offset))
    period = float(np.median(steps)) if len(steps) else 1000.0
    return Recording(
        offset_ms=offset,
        period_ms=period,
        devices=np.array([d.encode("ascii", "replace") for d in distinct], dtype="S16"),
        device_index=device_index[order],
        distinct_devices=len(distinct),
        values=np.round(values[order], 1) + 0.0,
        anomaly=anomaly[order],
        anomaly_id=anomaly_id[order],
    )


class ReplaySource:
    """Plays a recording once or in a loop; seq counts the samples of each device."""

    def __init__(self, recording: Recording, series: Series, loop: bool, path: Path) -> None:
        self.recording = recording
        self.series = series  # rate: the most a device can get per wall second
        self.loop = loop
        self.path = path
        self.speed = series.speed
        self._row = 0
        self._round = 0
        self._count = np.zeros(recording.distinct_devices, np.int64)
        self.finished = False
        fastest = (
            float(np.diff(recording.offset_ms).min()) / self.speed
            if len(recording.offset_ms) > 1
            else 1000.0
        )
        self.precision = (
            schema.SECONDS
            if fastest >= 1000 or recording.period_ms / self.speed >= 1000
            else schema.MILLISECONDS
        )

    def describe(self) -> str:
        r = self.recording
        return (
            f"replaying {self.path} ({len(r.offset_ms)} rows, {r.distinct_devices} device(s)) "
            f"at x{self.speed:g}{', looping' if self.loop else ''}, from seq {self.series.seq_base}"
        )

    def _due(self, row: int | np.ndarray, round_: int) -> float | np.ndarray:
        r = self.recording
        return self.series.wall_origin_ms + (round_ * r.span_ms + r.offset_ms[row]) / self.speed

    def next_due_ms(self) -> float:
        if self.finished:
            return float("inf")
        return self._due(self._row, self._round)

    def prefetch(self) -> None:
        """Nothing to prepare: the recording is in memory."""

    def take(self, now_ms: float) -> list[schema.Batch]:
        r = self.recording
        batches = []
        while not self.finished and self._due(self._row, self._round) <= now_ms:
            wall_offset = (
                now_ms - self.series.wall_origin_ms
            ) * self.speed - self._round * r.span_ms
            end = int(np.searchsorted(r.offset_ms, wall_offset, side="right"))
            end = min(
                max(end, self._row + 1), self._row + schema.ROWS_PER_MESSAGE, len(r.offset_ms)
            )
            rows = slice(self._row, end)
            index = r.device_index[rows]
            counts = np.zeros(len(index), np.int64)
            for device in np.unique(index):
                mine = index == device
                counts[mine] = self._count[device] + np.arange(mine.sum())
                self._count[device] += mine.sum()
            due = (
                self.series.wall_origin_ms
                + (self._round * r.span_ms + r.offset_ms[rows]) / self.speed
            )
            batch_rows = build_rows(
                ts_ms=np.round(due).astype(np.int64),
                seq=self.series.seq_base + counts,
                devices=r.devices[index],
                values=r.values[rows],
                anomaly=r.anomaly[rows],
                anomaly_metrics=np.zeros(end - self._row, np.uint8),
                anomaly_id=r.anomaly_id[rows],
            )
            batches.append(schema.Batch(rows=batch_rows, precision=self.precision))
            self._row = end
            if self._row == len(r.offset_ms):
                if self.loop:
                    self._row, self._round = 0, self._round + 1
                else:
                    self.finished = True
                    log.info("replay of %s finished; idle until stopped", self.path)
        return batches
