"""Simulating a subset of a fleet: the full fleet's columns exactly, at the subset's cost."""

from __future__ import annotations

import time

import numpy as np
import pytest

from producer.config import ProducerConfig
from producer.controller import Controller
from producer.model.anomalies import SIMULATED_KINDS, AnomalyPlan, apply
from producer.model.workload import Model
from producer.sources.series import Series
from producer.sources.sim import SimSource, device_name

START_MS = 1_754_179_200_000  # 2025-08-03 00:00:00 UTC, a Sunday
DAY_MS = 86_400_000


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    """Byte for byte (NaN payloads and the sign of zero included)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def spread_over_days(rng: np.random.Generator) -> np.ndarray:
    """Random instants, at ms resolution, over three days (weekend included), plus a run of
    consecutive ticks at 4 Hz."""
    scattered = START_MS + rng.integers(0, 3 * DAY_MS, 1500)
    run = START_MS + DAY_MS + 37_123 + np.arange(2000) * 250
    return np.sort(np.concatenate([scattered, run]))


@pytest.mark.parametrize("seed", [1, 7, 20250803])
def test_model_subset_equals_the_full_fleets_columns(seed):
    """Model on any subset of indices (one device, non-contiguous, random, unsorted) gives
    exactly the full model's columns for those indices."""
    rng = np.random.default_rng(seed)
    ts = spread_over_days(rng)
    full = Model(seed, 16).values(ts)
    subsets = [
        np.array([5]),
        np.array([0, 3, 4, 11, 15]),
        np.sort(rng.choice(16, 7, replace=False)),
        np.array([11, 2, 7]),  # columns follow the order given
    ]
    for subset in subsets:
        model = Model(seed, subset)
        assert model.devices == len(subset)
        assert_same(model.values(ts), full[:, subset, :])


def test_model_subset_is_keyed_by_the_global_index_beyond_the_fleet():
    """Device 40 alone is device 40 of any fleet big enough to hold it."""
    ts = START_MS + np.arange(600) * 1000
    assert_same(Model(3, np.array([40])).values(ts), Model(3, 41).values(ts)[:, [40], :])


@pytest.mark.parametrize(
    ("seed", "subset"),
    [(3, np.array([6])), (8, np.array([1, 4, 5, 10])), (21, np.array([0, 2, 3, 7, 9, 11]))],
)
def test_anomalies_on_a_subset_equal_the_full_fleets(seed, subset):
    """AnomalyPlan and apply on a subset give the full fleet's events, values and labels (kind,
    metrics mask, anomaly_id) for those devices, every kind including stuck occurring."""
    devices, rate = 12, 60.0
    ts = START_MS + 5 * 3_600_000 + np.arange(3 * 3600) * 1000  # 3 h at 1 Hz
    first, last = int(ts[0]), int(ts[-1])

    model = Model(seed, devices)
    plan = AnomalyPlan(seed, devices, rate, SIMULATED_KINDS)
    events = plan.events(first, last)
    full = apply(model.values(ts), ts, events, seed, model.values)

    sub_model = Model(seed, subset)
    sub_plan = AnomalyPlan(seed, subset, rate, SIMULATED_KINDS)
    sub_events = sub_plan.events(first, last)
    assert_same(sub_events, events[np.isin(events["device"], subset)])
    values, kind, mask, ids = apply(
        sub_model.values(ts), ts, sub_events, seed, sub_model.values, subset
    )

    assert np.array_equal(values, full[0][:, subset], equal_nan=True)
    assert_same(values, full[0][:, subset])
    assert_same(kind, full[1][:, subset])
    assert_same(mask, full[2][:, subset])
    assert_same(ids, full[3][:, subset])
    assert set(np.unique(kind[kind > 0])) == set(range(1, len(SIMULATED_KINDS) + 1))
    on_subset = ids[ids > 0] % 100_000 - 1  # ids carry the global device index
    assert set(np.unique(on_subset)) <= set(subset.tolist())


def series(devices: int = 10, seed: int = 4) -> Series:
    return Series(seed, devices, 2.0, START_MS, START_MS, 1000)


def rows_of(rows: np.ndarray, indices) -> np.ndarray:
    """The rows of the devices with these global indices, in their order."""
    names = [device_name(int(i)).encode() for i in indices]
    return rows[np.isin(rows["device"], names)]


def test_sim_source_subset_gives_the_full_sources_rows():
    """SimSource with devices=[...] publishes exactly the full source's rows of those devices,
    in index order within each tick, whatever order the indices were given in."""
    s = series()
    full = SimSource(s, 30.0, SIMULATED_KINDS).batch(0, 7199).rows
    for devices in ([7], [9, 0, 4, 5], [1, 2, 3, 6, 8]):
        sub = SimSource(s, 30.0, SIMULATED_KINDS, devices=np.array(devices))
        assert sub.device_names == [device_name(i) for i in sorted(devices)]
        assert_same(sub.batch(0, 7199).rows, rows_of(full, devices))
        assert (sub.batch(0, 7199).rows["anomaly"] > 0).any()


def test_two_disjoint_subsets_make_up_the_full_fleet():
    """Two sources owning the odd and the even devices together publish every row of the full
    source, each exactly once."""
    s = series()
    full = SimSource(s, 30.0, SIMULATED_KINDS).batch(200, 3799).rows
    even, odd = np.arange(0, 10, 2), np.arange(1, 10, 2)
    parts = [
        SimSource(s, 30.0, SIMULATED_KINDS, devices=d).batch(200, 3799).rows for d in (even, odd)
    ]
    assert_same(parts[0], rows_of(full, even))
    assert_same(parts[1], rows_of(full, odd))
    merged = np.concatenate(parts)
    merged = merged[np.lexsort((merged["device"], merged["seq"]))]
    assert_same(merged, full)


def test_sim_source_subset_sizes_and_description():
    """A subset's message and prefetch sizes follow the owned count, and describe() says so."""
    s = series(devices=1000)
    sub = SimSource(s, 4.0, SIMULATED_KINDS, devices=np.arange(3, 1000, 100))
    whole = SimSource(s, 4.0, SIMULATED_KINDS)
    assert sub.ticks_per_message == 100 * whole.ticks_per_message
    assert sub.describe().startswith("simulating 10 of 1000 device(s) at 2 Hz")
    assert whole.describe().startswith("simulating 1000 device(s) at 2 Hz")
    with pytest.raises(ValueError):
        SimSource(s, 4.0, SIMULATED_KINDS, devices=np.array([1000]))
    with pytest.raises(ValueError):
        SimSource(s, 4.0, SIMULATED_KINDS, devices=np.array([], np.int64))


@pytest.mark.parametrize("kind", ["stuck", "noise_burst", "incident"])
def test_injected_anomaly_on_a_subset_matches_the_full_fleet(kind):
    """`ctl inject` on a device names it by global index: the subset source labels and alters
    the same samples as the full source does."""
    s = series()
    sources = [
        SimSource(s, 0.0, SIMULATED_KINDS, first_tick=100),
        SimSource(s, 0.0, SIMULATED_KINDS, first_tick=100, devices=np.array([2, 5, 8])),
    ]
    for source in sources:
        reply = Controller(ProducerConfig(), source).handle(
            {"cmd": "inject", "kind": kind, "device": "host-06", "duration_s": 60}
        )
        assert reply["device"] == "host-06"
        assert source.injected["device"].tolist() == [5]
    full, sub = (source.batch(90, 400).rows for source in sources)
    assert_same(sub, rows_of(full, [2, 5, 8]))
    labelled = sub[sub["anomaly"] > 0]
    assert len(labelled) and set(labelled["device"]) == {b"host-06"}


@pytest.mark.slow
def test_subset_cost_is_proportional_to_its_size():
    """Model values for 100 of 1000 devices take under 40 % of the time of all 1000 (best of 5;
    this thread's CPU time, which other processes on a busy machine do not stretch)."""
    ts = START_MS + np.arange(100) * 1000
    subset = np.sort(np.random.default_rng(0).choice(1000, 100, replace=False))

    def best(devices) -> float:
        times = []
        for _ in range(5):
            started = time.thread_time()
            Model(9, devices).values(ts)
            times.append(time.thread_time() - started)
        return min(times)

    full_s, subset_s = best(1000), best(subset)
    assert subset_s < 0.4 * full_s, f"subset {subset_s:.4f} s vs full {full_s:.4f} s"
