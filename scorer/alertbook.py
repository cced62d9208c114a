"""Every alert the scorer was sent, per detector, with the count of any lost on the way."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from common import alerts, schema
from common.logs import Every
from scorer.matching import MISSING, alerts_frame

log = logging.getLogger(__name__)


class AlertBook:
    """Alerts in the order they came, as packed records; bounded by `limit` alerts."""

    def __init__(self, limit: int = 10_000_000) -> None:
        self.limit = limit
        self._chunks: list[np.ndarray] = []
        self.kept = 0
        self.received = 0
        self.lost = 0  # numbers skipped by a sender: alerts lost between it and us
        self.malformed = 0  # messages that were not alerts
        self.dropped = 0  # past `limit`
        self._next: dict[int, int] = {}  # sender -> number of its next alert
        self._warn = Every(10.0)

    def add(self, frames: list[bytes]) -> None:
        try:
            source, first, records = alerts.decode(frames)
        except schema.MessageError as exc:
            self.malformed += 1
            if self._warn(time.monotonic()):
                log.warning("dropped a malformed alerts message (%s); %d so far", exc,
                            self.malformed)
            return
        expected = self._next.get(source)
        if expected is not None and first > expected:
            self.lost += first - expected
            log.warning("%d alert(s) lost on the way from a broadcaster", first - expected)
        self._next[source] = first + len(records)
        self.received += len(records)
        room = self.limit - self.kept
        if len(records) > room:
            self.dropped += len(records) - room
            records = records[:room]
        if len(records):
            self._chunks.append(records.copy())
            self.kept += len(records)

    def records(self) -> np.ndarray:
        """Every alert kept, in one array (the chunks are joined once, then appended to)."""
        if not self._chunks:
            return np.zeros(0, alerts.RECORD)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    def frames(self, records: np.ndarray | None = None) -> dict[str, pd.DataFrame]:
        """Each detector's alerts (of `records`, by default all kept), as the report takes
        them."""
        records = self.records() if records is None else records
        if not len(records):
            return {}
        names, which = np.unique(records["detector"], return_inverse=True)
        devices, device_index = np.unique(records["device"], return_inverse=True)
        device_text = np.array([schema.device_name(d) for d in devices.tolist()], object)
        kinds = np.array([None, *schema.ANOMALY_KINDS], object)
        out = {}
        for i, name in enumerate(names.tolist()):
            mine = which == i
            part = records[mine]
            ts = part["ts_ms"].copy()
            ts[ts == alerts.NO_TIME] = MISSING
            label = name.rstrip(b"\0").decode("utf-8", "replace")
            out[label] = alerts_frame(
                device_text[device_index[mine]], seq=part["seq"], ts=ts, score=part["score"],
                kind=kinds[part["kind"]], detector=label, received=part["received_ms"],
            )
        return out
