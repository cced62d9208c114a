"""A replay file as a source: its rows at their own pace x speed, on its own time axis.

Timestamps keep the file's spacing, rebased so that the first row is at --start (or at
the moment the replay begins), the same rule as the simulation's; with --speed the wall
time between two rows is their spacing / speed. Values keep the precision of the file.
Rows the file holds that are not valid samples (see producer.sources.recording) keep
their place in their device's seq but are never published: when the replay reaches one,
it is handed to `refuse`, so that subscribers learn why that seq is missing.
"""

from __future__ import annotations

import logging

import numpy as np

from common import schema
from producer.sources import Refuse, build_rows
from producer.sources.recording import Recording
from producer.sources.series import Series

log = logging.getLogger(__name__)

# A replay starts this long after the producer, so that subscribers started with it
# (ZeroMQ's slow joiners) see the file from its first row.
GRACE_MS = 1000


class ReplaySource:
    """Plays a recording once or in a loop; seq counts each device's rows in file order."""

    def __init__(
        self, recording: Recording, series: Series, loop: bool, refuse: Refuse | None = None
    ) -> None:
        self.recording = recording
        self.series = series  # wall_origin: when the replay begins; origin: its first time
        self.loop = loop
        self.refuse = refuse or (lambda device, seq: None)
        self.speed = series.speed
        self.precision = recording.precision
        self._offset = recording.offset_ms
        self._names = [schema.device_name(d) for d in recording.devices]
        self._row = 0
        self._round = 0
        self.finished = False

    def describe(self) -> str:
        r = self.recording
        return (
            f"replaying {r.path} ({len(r.ts_ms)} rows, {len(r.devices)} device(s), "
            f"{r.decimals} decimal(s)) at x{self.speed:g}{', looping' if self.loop else ''}, "
            f"from seq {self.series.seq_base}"
        )

    def fleet(self) -> dict:
        """What a dashboard shows beside the samples: the kinds the file's labels hold (NAB
        windows are `window`) and the clock's speed."""
        r = self.recording
        codes = np.unique(r.anomaly[~r.refused]).tolist()
        return {
            "speed": self.speed,
            "anomaly_kinds": [schema.ANOMALY_KINDS[c - 1] for c in codes if c],
            "event_kinds": [
                schema.EVENT_KINDS[c - 1] for c in np.unique(r.event[~r.refused]).tolist() if c
            ],
        }

    def _due(self, row: int, round_: int) -> float:
        position = round_ * self.recording.span_ms + self._offset[row]
        return self.series.wall_origin_ms + position / self.speed

    def next_due_ms(self) -> float:
        if self.finished:
            return float("inf")
        return self._due(self._row, self._round)

    def prefetch(self) -> None:
        """Nothing to prepare: the recording is in memory."""
        return None

    def take(self, now_ms: float) -> list[schema.Batch]:
        r = self.recording
        batches = []
        while not self.finished and self._due(self._row, self._round) <= now_ms:
            position = (now_ms - self.series.wall_origin_ms) * self.speed
            end = int(
                np.searchsorted(self._offset, position - self._round * r.span_ms, side="right")
            )
            end = min(max(end, self._row + 1), self._row + schema.ROWS_PER_MESSAGE, len(r.ts_ms))
            batch = self._rows(slice(self._row, end))
            if len(batch):
                batches.append(batch)
            self._row = end
            if self._row == len(r.ts_ms):
                if self.loop:
                    self._row, self._round = 0, self._round + 1
                else:
                    self.finished = True
                    log.info("replay of %s finished; idle until stopped", r.path)
        return batches

    def _rows(self, rows: slice) -> schema.Batch:
        """The valid samples of these rows; the refused ones handed to `refuse`."""
        r = self.recording
        index = r.device_index[rows]
        known = index >= 0
        safe = np.maximum(index, 0)
        seq = self.series.seq_base + self._round * r.device_rows[safe] + r.seq_offset[rows]
        refused = r.refused[rows]
        for i in np.flatnonzero(refused).tolist():
            if known[i]:
                self.refuse(self._names[index[i]], int(seq[i]))
            else:
                self.refuse(None, None)
        keep = ~refused
        stamps = self.series.origin_ms + self._round * r.span_ms + self._offset[rows]
        published = build_rows(
            ts_ms=stamps[keep],
            seq=seq[keep],
            devices=r.devices[safe[keep]],
            values=r.values[rows][keep],
            anomaly=r.anomaly[rows][keep],
            anomaly_metrics=r.anomaly_metrics[rows][keep],
            anomaly_id=r.anomaly_id[rows][keep],
        )
        published["anomaly_root"] = r.anomaly_root[rows][keep]
        published["event"] = r.event[rows][keep]
        return schema.Batch(rows=published, precision=self.precision, decimals=r.decimals)
