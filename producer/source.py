"""What the producer's loop publishes from: a source of batches due at wall-clock times."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from common import schema


class Source(Protocol):
    """Samples due at wall-clock times; the producer's loop waits and publishes."""

    def describe(self) -> str:
        """One line for the start-up log."""
        ...

    def next_due_ms(self) -> float:
        """Wall-clock time (ms) at which the next sample is due."""
        ...

    def take(self, now_ms: float) -> list[schema.Batch]:
        """Every sample due by `now_ms`, in order, in batches of bounded size."""
        ...

    def prefetch(self) -> None:
        """Use the time before the next deadline to prepare what it will need."""
        ...


def build_rows(
    ts_ms: np.ndarray,
    seq: np.ndarray,
    devices: np.ndarray,
    values: np.ndarray,
    anomaly: np.ndarray | None = None,
    anomaly_metrics: np.ndarray | None = None,
    anomaly_id: np.ndarray | None = None,
) -> np.ndarray:
    """Records from flat, equally long columns (`values` is (n, 4) in METRICS order)."""
    rows = schema.empty_rows(len(ts_ms))
    rows["ts_ms"] = ts_ms
    rows["seq"] = seq
    rows["device"] = devices
    for i, metric in enumerate(schema.METRICS):
        rows[metric] = values[:, i]
    if anomaly is not None:
        rows["anomaly"] = anomaly
        rows["anomaly_metrics"] = anomaly_metrics
        rows["anomaly_id"] = anomaly_id
    return rows
