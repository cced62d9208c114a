"""What the producer publishes from: the simulation, a replay file, or this machine (live).

Each source yields batches due at wall-clock times; the producer's loop waits and publishes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from common import schema
from common.shards import Shard

if TYPE_CHECKING:
    from producer.sources.series import Series

# Hears (device id, seq) of a row a source refused to publish; (None, None) when the row
# has no valid device id.
Refuse = Callable[[str | None, int | None], None]


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

    def prefetch(self) -> np.ndarray | None:
        """Use the time before the next deadline to prepare what it will need; the rows it
        generated ahead, if it did (take() cuts its batches from them), else None."""
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


class IdleSource:
    """A producer of several that owns none of the devices: it publishes nothing, but runs
    (and answers ctl), so that a scaled pipeline keeps running with more producers than
    devices."""

    device_names: list[str] = []

    def __init__(self, shard: Shard, what: str, series: Series | None = None) -> None:
        self.shard, self.what = shard, what
        self.series = series  # the formation's, which producers 2..N learn from producer 1

    def describe(self) -> str:
        return f"idle: producer {self.shard} owns none of {self.what}"

    def next_due_ms(self) -> float:
        return float("inf")

    def take(self, now_ms: float) -> list[schema.Batch]:
        return []

    def prefetch(self) -> None:
        return None
