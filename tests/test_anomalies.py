"""Anomalies: every kind happens when asked, and labels mark exactly the altered samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.schema import ANOMALY_KINDS, METRICS
from producer.model.anomalies import SIMULATED_KINDS
from producer.series import Series
from producer.sources.sim import SimSource

START_MS = 1_754_179_200_000  # 2025-08-03 00:00:00 UTC


def simulate(kinds: tuple[str, ...], rate: float, hours: float, devices: int = 2, seed: int = 3):
    """(with anomalies, without anomalies) as record arrays, 1 Hz."""
    series = Series(seed, devices, 1.0, START_MS, START_MS, 0)
    ticks = int(hours * 3600)
    on = SimSource(series, rate, kinds).batch(0, ticks - 1).rows
    off = SimSource(series, 0.0, kinds).batch(0, ticks - 1).rows
    return on, off


def altered(on: np.ndarray, off: np.ndarray) -> np.ndarray:
    changed = np.zeros(len(on), bool)
    for m in METRICS:
        a, b = on[m], off[m]
        changed |= (a != b) & ~(np.isnan(a) & np.isnan(b))
    return changed


@pytest.mark.parametrize("kind", SIMULATED_KINDS)
def test_each_kind_occurs_and_is_labelled_exactly(kind):
    """Labelled if and only if a value differs from the anomaly-free series."""
    on, off = simulate((kind,), rate=30, hours=2)
    labelled = on["anomaly"] > 0
    assert labelled.any(), f"no {kind} in 2 h at 30/h"
    assert np.array_equal(labelled, altered(on, off))
    assert set(on["anomaly"][labelled]) == {ANOMALY_KINDS.index(kind) + 1}
    assert (on["anomaly_id"][labelled] > 0).all() and (on["anomaly_id"][~labelled] == 0).all()


def test_dropout_leaves_values_empty_but_keeps_the_samples():
    """A dropout labels its samples and leaves all four metric values empty (NaN), but every sample
    is still produced with the same seq as in the anomaly-free series."""
    on, off = simulate(("dropout",), rate=30, hours=1)
    gone = on["anomaly"] > 0
    assert all(np.isnan(on[m][gone]).all() for m in METRICS)
    assert np.array_equal(on["seq"], off["seq"])  # no sample is missing


def test_an_event_touches_only_its_metrics():
    """Every value that a spike, level shift or stuck event changes belongs to a metric whose bit is
    set in that sample's anomaly_metrics."""
    on, off = simulate(("spike", "level_shift", "stuck"), rate=30, hours=2)
    for i, metric in enumerate(METRICS):
        changed = (on[metric] != off[metric]) & ~np.isnan(off[metric])
        assert (on["anomaly_metrics"][changed] & (1 << i)).all()


def test_rate_is_what_was_asked():
    """Events per device-hour match the setting (one candidate per minute at most)."""
    on, _ = simulate(SIMULATED_KINDS, rate=12, hours=10, devices=4)
    events = len(np.unique(on["anomaly_id"][on["anomaly_id"] > 0]))
    assert 0.75 * 12 * 40 <= events <= 1.25 * 12 * 40


def test_zero_rate_means_no_anomalies():
    """At rate 0, even with every kind enabled, no sample is labelled and the rows are
    byte-identical to the anomaly-free series."""
    on, off = simulate(SIMULATED_KINDS, rate=0, hours=1)
    assert not on["anomaly"].any() and on.tobytes() == off.tobytes()


def test_events_of_a_device_never_overlap():
    """On one device, once a new event's id starts, the previous event's id never appears again:
    events follow one another and never interleave."""
    on, _ = simulate(SIMULATED_KINDS, rate=40, hours=3, devices=1)
    ids = on["anomaly_id"][on["anomaly_id"] > 0]
    changes = ids[np.flatnonzero(np.diff(ids.astype(np.int64)) != 0) + 1]
    # An id never comes back after another one started.
    assert len(set(changes.tolist())) == len(changes)


def test_a_rolling_detector_finds_the_spikes():
    """A rolling robust z-score flags almost every labelled spike: labels and data line up."""
    on, _ = simulate(("spike",), rate=20, hours=6, devices=3, seed=8)
    frame = pd.DataFrame(on[["ts_ms", "device", "anomaly_id", "anomaly_metrics", *METRICS]])
    found = hit = 0
    for _, device in frame.groupby("device"):
        flags = np.zeros(len(device), bool)
        for i, metric in enumerate(METRICS):
            x = device[metric]
            median = x.rolling(61, center=True, min_periods=10).median()
            spread = (x - median).abs().rolling(61, center=True, min_periods=10).median()
            z = (x - median) / (1.4826 * spread + 1e-9)
            flags |= (z.abs() > 6).to_numpy() & (
                (device["anomaly_metrics"] & (1 << i)) > 0
            ).to_numpy()
        events = device["anomaly_id"].to_numpy()
        for event in np.unique(events[events > 0]):
            found += 1
            hit += flags[events == event].any()
    assert found >= 50
    assert hit / found >= 0.9, f"recall {hit / found:.2f}"
