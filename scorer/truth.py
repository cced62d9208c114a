"""What really happened: each device's samples (timelines) and its labelled events.

Live, `TruthTracker` follows the bus's labelled samples batch by batch; offline,
`scorer.files` reads the same from a windows file and a series. Both give a `Truth`, so
the report is the same function of the same facts either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from common import schema
from common.windows import Window, WindowTracker
from scorer.timeline import Timeline, TimelineBuilder

EVENT_COLUMNS = (
    "id", "device", "kind", "root", "start", "end", "first_seq", "last_seq", "samples", "planned"
)


@dataclass
class Truth:
    """Every device's timeline, and one row per event (anomalies and planned events):
    id, device, kind, root (0 for planned events), start and end (ms), first_seq,
    last_seq, samples (labelled), planned (bool)."""

    timelines: dict[str, Timeline]
    events: pd.DataFrame

    @property
    def anomalies(self) -> pd.DataFrame:
        return self.events[~self.events["planned"]]

    @property
    def planned(self) -> pd.DataFrame:
        return self.events[self.events["planned"]]


def empty_events() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in EVENT_COLUMNS})


_DTYPES = {
    "id": "uint64", "device": "object", "kind": "object", "root": "uint64", "start": "int64",
    "end": "int64", "first_seq": "int64", "last_seq": "int64", "samples": "int64",
    "planned": "bool",
}


def events_frame(rows: list[dict]) -> pd.DataFrame:
    """Events as the Truth's table, parts of one event (same id) joined, sorted by start."""
    if not rows:
        return empty_events()
    frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    frame = (
        frame.groupby("id", sort=False)
        .agg(
            device=("device", "first"), kind=("kind", "first"), root=("root", "first"),
            start=("start", "min"), end=("end", "max"), first_seq=("first_seq", "min"),
            last_seq=("last_seq", "max"), samples=("samples", "sum"), planned=("planned", "first"),
        )
        .reset_index()
    )
    frame = frame.astype({c: _DTYPES[c] for c in EVENT_COLUMNS})
    return frame.sort_values(["start", "device", "id"], kind="stable").reset_index(drop=True)


class TruthTracker:
    """Follows labelled samples: timelines, anomaly events (with their seq bounds) and
    planned events. Cheap per sample: only labelled rows are looked at one by one."""

    def __init__(self) -> None:
        self.timelines = TimelineBuilder()
        self.windows = WindowTracker()
        self.closed: list[Window] = []
        self.bounds: dict[int, list[int]] = {}  # anomaly id -> [first seq, last seq]
        self.samples = 0

    def add(self, batch: schema.Batch) -> None:
        rows = batch.rows
        if not len(rows):
            return
        self.samples += len(rows)
        self.timelines.add(rows["device"], rows["seq"], rows["ts_ms"])
        ids = rows["anomaly_id"]
        labelled = np.flatnonzero(ids)
        if len(labelled):
            sub_ids = ids[labelled]
            seqs = rows["seq"][labelled].astype(np.int64)
            unique, inverse = np.unique(sub_ids, return_inverse=True)
            low = np.full(len(unique), np.iinfo(np.int64).max)
            high = np.full(len(unique), -1, np.int64)
            np.minimum.at(low, inverse, seqs)
            np.maximum.at(high, inverse, seqs)
            for event, a, b in zip(unique.tolist(), low.tolist(), high.tolist(), strict=True):
                bound = self.bounds.get(event)
                if bound is None:
                    self.bounds[event] = [a, b]
                else:
                    bound[0], bound[1] = min(bound[0], a), max(bound[1], b)
        if len(labelled) or self.windows.open or np.any(rows["event"]) or self.windows.open_events:
            self.closed += self.windows.update(batch)

    def truth(self) -> Truth:
        """What is known so far; events still running end at their latest sample."""
        windows = [*self.closed, *self.windows.open.values(), *self.windows.open_events.values()]
        rows = []
        for w in windows:
            planned = w.kind in schema.EVENT_KINDS
            if planned:
                first, last = w.last_seq - w.samples + 1, w.last_seq
            else:
                first, last = self.bounds.get(w.anomaly_id, (-1, -1))
            rows.append(
                {
                    "id": w.anomaly_id, "device": w.device, "kind": w.kind,
                    "root": 0 if planned else (w.root or w.anomaly_id),
                    "start": w.start_ms, "end": w.end_ms, "first_seq": first,
                    "last_seq": last, "samples": w.samples, "planned": planned,
                }
            )
        return Truth(self.timelines.timelines(), events_frame(rows))
