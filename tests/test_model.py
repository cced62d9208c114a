"""The simulation model: bounds, smoothness, coupling, device differences, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from producer.model.roles import ROLES, RoleMix
from producer.model.workload import Model, finish

START_MS = 1_754_179_200_000  # 2025-08-03 00:00:00 UTC
CPU, MEM, DISK, NET = range(4)


@pytest.fixture(scope="module")
def day() -> np.ndarray:
    """A day at 1 Hz for 4 devices."""
    return values(7, 4, START_MS + np.arange(86_400) * 1000)


def values(seed: int, devices: int, ts: np.ndarray, roles: str = "mix") -> np.ndarray:
    return finish(Model(seed, devices, RoleMix.parse(roles)).values(ts))


def test_bounds(day):
    """cpu and mem stay within 0-100 %, disk_io and net are never negative."""
    assert day[..., CPU].min() >= 0 and day[..., CPU].max() <= 100
    assert day[..., MEM].min() >= 0 and day[..., MEM].max() <= 100
    assert day[..., DISK].min() >= 0 and day[..., NET].min() >= 0
    assert not np.isnan(day).any()


@pytest.mark.parametrize("role", ROLES)
def test_typical_levels_follow_the_role(role):
    """Over a day, each device's medians sit near its role's table values: cpu and disk_io within
    a factor 2.5 (devices vary, load follows the day), mem within 10 points, net within 3x."""
    day = values(5, 4, START_MS + np.arange(0, 86_400_000, 10_000), roles=role)
    spec = ROLES[role]
    median = np.median(day, axis=0)  # (devices, 4)
    assert (median[:, CPU] > spec.cpu / 2.5).all() and (median[:, CPU] < spec.cpu * 2.5).all()
    assert (abs(median[:, MEM] - spec.mem) < 10).all()
    assert (median[:, DISK] > spec.disk / 2.5).all() and (median[:, DISK] < spec.disk * 2.5).all()
    assert (median[:, NET] > spec.net / 3).all() and (median[:, NET] < spec.net * 3).all()


def test_values_have_one_decimal(day):
    """Every value of every metric and device over the day equals itself rounded to one decimal."""
    assert np.allclose(day, np.round(day, 1))


def test_smooth_over_time(day):
    """Each value depends on the previous one: high lag-1 autocorrelation of cpu at 1 Hz, yet
    below 1 (per-sample jitter; hours-long batch jobs make most of a day's variance)."""
    for device in range(4):
        cpu = day[:, device, CPU]
        assert 0.8 <= np.corrcoef(cpu[:-1], cpu[1:])[0, 1] <= 0.999


def test_metrics_are_coupled(day):
    """cpu, net and disk_io rise and fall together to a degree."""
    for device in range(4):
        cpu, disk, net = day[:, device, CPU], day[:, device, DISK], day[:, device, NET]
        assert np.corrcoef(cpu, net)[0, 1] > 0.2
        assert np.corrcoef(cpu, disk)[0, 1] > 0.2


def test_devices_differ(day):
    """Devices have their own levels and their own noise."""
    means = day[..., CPU].mean(axis=0)
    assert np.ptp(means) > 1.0
    assert abs(np.corrcoef(day[:, 0, NET], day[:, 1, NET])[0, 1]) < 0.9


def test_same_seed_same_data_other_seed_other_data():
    """The same seed gives identical values for the same timestamps, and another seed gives
    different values."""
    ts = START_MS + np.arange(600) * 1000
    a = values(1, 3, ts)
    assert np.array_equal(a, values(1, 3, ts))
    assert not np.array_equal(a, values(2, 3, ts))


def test_chunking_does_not_change_values():
    """Tick by tick (live) and all at once (backfill) give identical numbers."""
    ts = START_MS + 1_000_000 + np.arange(0, 3000, 100)  # 10 Hz, across an AR block edge
    whole = values(3, 2, ts)
    live = Model(seed=3, devices=2)
    ticked = np.concatenate([finish(live.values(ts[i : i + 1])) for i in range(len(ts))])
    assert np.array_equal(whole, ticked)


def test_adding_devices_keeps_existing_ones():
    """Device k's series does not depend on how many devices are simulated."""
    ts = START_MS + np.arange(120) * 1000
    assert np.array_equal(values(5, 2, ts), values(5, 5, ts)[:, :2])


def test_higher_rates_stay_smooth():
    """At 100 Hz the latent state is interpolated: steps are small, per-second means smooth."""
    ts = START_MS + np.arange(100 * 600) * 10  # ten minutes at 100 Hz
    cpu = values(9, 1, ts)[:, 0, CPU]
    assert np.abs(np.diff(cpu)).mean() < 4.0
    per_second = cpu.reshape(600, 100).mean(axis=1)
    assert np.corrcoef(per_second[:-1], per_second[1:])[0, 1] > 0.8


def test_daily_cycle_is_visible_over_two_days():
    """Hourly means of cpu follow a daily pattern: the same hours of two days correlate."""
    ts = START_MS + np.arange(2 * 86_400) * 1000
    cpu = values(11, 1, ts, roles="web")[:, 0, CPU]
    hourly = cpu.reshape(2, 24, 3600).mean(axis=2)
    assert np.corrcoef(hourly[0], hourly[1])[0, 1] > 0.6
    assert np.ptp(hourly.mean(axis=0)) > 8  # peak and trough hours differ by > 8 points


def test_weekends_are_quieter():
    """Over a Monday-to-Sunday week, mean cpu across 8 web front ends on Saturday and Sunday is
    more than 2 points below the weekday mean."""
    week = START_MS - 6 * 86_400_000 + np.arange(0, 7 * 86_400_000, 60_000)  # Mon..Sun, 1/min
    cpu = values(12, 8, week, roles="web")[..., CPU]
    day_means = cpu.reshape(7, -1, 8).mean(axis=(1, 2))
    assert day_means[5:].mean() < day_means[:5].mean() - 2


def test_memory_saw_tooth_grows_and_releases():
    """mem rises between collections and drops at each one: more small rises than big falls."""
    ts = START_MS + np.arange(4 * 3600) * 1000
    mem = Model(13, 1, RoleMix.parse("web"))._garbage(ts)[:, 0]
    steps = np.diff(mem)
    drops = steps[steps < -1]
    assert len(drops) >= 4  # at least one collection per hour
    assert (steps > 0).mean() > 0.95


def test_io_has_heavy_tailed_bursts():
    """Over a day at 1 Hz, net's 99.9th percentile is more than 2.5 times its median."""
    ts = START_MS + np.arange(86_400) * 1000
    net = values(14, 1, ts)[:, 0, NET]
    assert np.percentile(net, 99.9) > 2.5 * np.median(net)


def test_live_ticks_between_other_instants_give_the_same_numbers():
    """Ticks one at a time at 4 Hz, each followed by a look at some earlier instants (as stuck
    sensors do), give exactly the numbers of one call for all ticks, whatever the cache keeps."""
    ts = START_MS + 3_600_000 + np.arange(0, 60_000, 250)
    whole = Model(seed=4, devices=3).values(ts)
    live = Model(seed=4, devices=3)
    rng = np.random.default_rng(0)
    ticked = []
    for t in ts:
        ticked.append(live.values(np.array([t])))
        live.values(t - rng.integers(1_000, 300_000, rng.integers(1, 4)))
    assert np.concatenate(ticked).tobytes() == whole.tobytes()


@pytest.mark.parametrize("step_s", [1, 30])
def test_scattered_instants_read_the_same_ar_values_as_a_whole_span(step_s: int) -> None:
    """An AR process asked for a few instants far apart (only their blocks are computed)
    gives exactly what it gives for those instants within the whole span between them."""
    from producer.model.workload import AR_BLOCK, ARProcess

    def process() -> ARProcess:
        indices = np.arange(3)
        return ARProcess(7, 3, indices, step_s, np.full(3, 20.0), np.full(3, 2.0))

    span = np.arange(5 * AR_BLOCK * step_s + 17)
    whole = process().at(span)
    scattered = np.array([0, 5, AR_BLOCK * step_s - 1, 3 * AR_BLOCK * step_s + 2, span[-1]])
    assert np.array_equal(process().at(scattered), whole[scattered])
    assert np.array_equal(process().at(scattered[::-1].copy()), whole[scattered[::-1]])
