"""Anomaly windows: one per event, closed when the device's latest sample stops carrying it."""

from __future__ import annotations

import numpy as np
import pytest

from common import schema
from common.windows import WindowTracker, _latest_rows


def labelled_ticks(devices: int, ticks: int, seed: int, t0: int = 1_800_000_000_000):
    """Tick-major rows; each device runs through events (anomaly_id) and quiet stretches."""
    rng = np.random.default_rng(seed)
    rows = schema.empty_rows(devices * ticks)
    rows["device"] = np.tile([f"dev-{i}".encode() for i in range(devices)], ticks)
    rows["ts_ms"] = t0 + np.repeat(np.arange(ticks), devices) * 1000
    rows["seq"] = np.repeat(np.arange(ticks), devices)
    state = np.zeros(devices, np.uint64)
    ids = np.zeros((ticks, devices), np.uint64)
    for t in range(ticks):
        change = rng.random(devices) < 0.2
        state[change] = np.where(
            rng.random(change.sum()) < 0.5, 0, rng.integers(1, 10**6, change.sum())
        )
        ids[t] = state
    rows["anomaly_id"] = ids.ravel()
    rows["anomaly"] = np.where(rows["anomaly_id"] > 0, 1, 0)
    return rows


def reference_windows(rows: np.ndarray) -> list[tuple[int, str, int, int, int]]:
    """Runs of one id per device, straight from the definition."""
    out = []
    for device in np.unique(rows["device"]):
        mine = rows[rows["device"] == device]
        start = 0
        for i in range(1, len(mine) + 1):
            if i == len(mine) or mine["anomaly_id"][i] != mine["anomaly_id"][start]:
                if mine["anomaly_id"][start]:
                    out.append(
                        (
                            int(mine["anomaly_id"][start]),
                            device.decode(),
                            int(mine["ts_ms"][start]),
                            int(mine["ts_ms"][i - 1]),
                            i - start,
                        )
                    )
                start = i
    return sorted(out)


@pytest.mark.parametrize("seed", range(8))
def test_windows_match_the_definition_however_batches_are_cut(seed: int) -> None:
    """However the rows are cut into batches, the tracker's windows (closed during updates or by
    close_all) are exactly the runs of one nonzero anomaly_id per device, with their first and last
    timestamps and sample counts."""
    rows = labelled_ticks(devices=1 + seed * 3, ticks=60, seed=seed)
    tracker, found = WindowTracker(), []
    cuts = np.sort(np.random.default_rng(seed).integers(0, len(rows), 12))
    for part in np.split(rows, cuts):
        found += tracker.update(schema.Batch(part, schema.SECONDS))
    found += tracker.close_all()
    got = sorted((w.anomaly_id, w.device, w.start_ms, w.end_ms, w.samples) for w in found)
    assert got == reference_windows(rows)


def test_latest_rows_finds_each_devices_last_row() -> None:
    """_latest_rows gives the index of each requested device's last row, whether in the partial last
    tick or the tick before, and leaves out a device with no rows."""
    rows = labelled_ticks(devices=7, ticks=5, seed=1)[:-3]  # the last tick is partial
    wanted = [b"dev-0", b"dev-6", b"dev-9"]
    assert _latest_rows(rows, wanted) == {b"dev-0": 28, b"dev-6": 27}
