"""Anomalies: every kind happens when asked, and labels mark exactly the altered samples."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from common.schema import ANOMALY_KINDS, METRICS
from conftest import REPO
from producer.config import ProducerConfig
from producer.model.anomalies import SIMULATED_KINDS, parse_durations, parse_kinds
from producer.sources.series import Series
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


def events_of(on: np.ndarray) -> pd.DataFrame:
    """One row per labelled event: its kind and its labelled span in seconds (1 Hz)."""
    labelled = pd.DataFrame(on[on["anomaly_id"] > 0][["anomaly_id", "anomaly", "ts_ms"]])
    return labelled.groupby("anomaly_id").agg(
        kind=("anomaly", "first"), span_s=("ts_ms", lambda t: (t.max() - t.min()) / 1000 + 1)
    )


def test_kind_weights_set_each_kinds_share():
    """`spike=3,dip=1`: three spikes for every dip, within sampling error, and no other kind."""
    series = Series(5, 4, 1.0, START_MS, START_MS, 0)
    on = SimSource(series, 30, parse_kinds("spike=3,dip=1")).batch(0, 6 * 3600 - 1).rows
    kinds = events_of(on)["kind"].map(lambda code: ANOMALY_KINDS[code - 1]).value_counts()
    assert set(kinds.index) == {"spike", "dip"}
    assert 2.3 <= kinds["spike"] / kinds["dip"] <= 4.0, kinds.to_dict()


def test_all_with_a_zero_weight_leaves_that_kind_out():
    """`all,spike=0` is every kind but spike, each equally likely."""
    weights = parse_kinds("all,spike=0")
    assert list(weights) == list(SIMULATED_KINDS[1:]) and set(weights.values()) == {1.0}


def test_durations_replace_the_catalogues():
    """`--anomaly-duration level_shift=20m-30m`: level shifts last 20-30 minutes (or until the
    next candidate starts); spikes keep their 1-5 s."""
    series = Series(6, 3, 1.0, START_MS, START_MS, 0)
    durations = parse_durations("level_shift=20m-30m")
    source = SimSource(series, 1, parse_kinds("level_shift,spike"), anomaly_durations=durations)
    plan = source.anomalies.events(START_MS, START_MS + 48 * 3_600_000)
    shifts = plan[plan["kind"] == ANOMALY_KINDS.index("level_shift") + 1]
    spikes = plan[plan["kind"] == ANOMALY_KINDS.index("spike") + 1]
    assert len(shifts) >= 20 and len(spikes) >= 20
    assert shifts["length"].min() >= 1_200_000 and shifts["length"].max() <= 1_800_000
    assert spikes["length"].min() >= 1000 and spikes["length"].max() <= 5000
    untruncated = shifts[shifts["end"] - shifts["start"] == shifts["length"]]
    assert len(untruncated) >= len(shifts) // 3


def test_default_density_is_about_one_anomaly_per_device_hour():
    """The producer's default is 1 anomaly per device-hour; on 10 devices over two days the
    labelled share stays below 5 % (the full 7-day figure is pinned in test_fidelity)."""
    config = ProducerConfig()
    assert config.anomaly_rate == 1.0
    series = Series(11, 10, 1.0, START_MS, START_MS, 0)
    on = SimSource(series, config.anomaly_rate, config.anomaly_kinds).batch(0, 2 * 86_400 - 1).rows
    assert 0.5 * 480 <= len(events_of(on)) <= 1.25 * 480
    assert (on["anomaly"] > 0).mean() < 0.05


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--anomaly-kinds", "spike=lots"], "weight of spike must be a number 0..1000, got 'lots'"),
        (["--anomaly-kinds", "spike=0"], "every anomaly kind has weight 0 in 'spike=0'"),
        (["--anomaly-duration", "spike=9-1"], "duration of spike must be within 0..6h"),
        (["--anomaly-duration", "drift=5 minutes"], "'drift=5 minutes' is not a duration range"),
        (["--anomaly-duration", "leak=1-2"], "unknown anomaly kind 'leak'"),
    ],
)
def test_bad_anomaly_settings_are_one_line_errors(args, message, tmp_path):
    """A bad weight or duration stops `generate` with one line naming it, exit status 2."""
    run = subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--duration", "1m", *args],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr


def test_many_stuck_sensors_live_equal_the_backfill():
    """With more stuck sensors at once than the source keeps earlier instants for, publishing
    tick by tick gives the rows of one batch."""
    series = Series(12, 600, 10.0, START_MS, START_MS, 0)
    whole = SimSource(series, 60, ("stuck",)).batch(0, 39).rows
    live = SimSource(series, 60, ("stuck",))
    assert len(np.unique(whole["anomaly_id"][whole["anomaly_id"] > 0])) > 512
    ticked = np.concatenate([live.batch(k, k).rows for k in range(40)])
    assert ticked.tobytes() == whole.tobytes()
