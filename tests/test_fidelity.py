"""Fidelity: a 7-day backfill at default settings has the statistics of real host metrics.

The targets (producer.model.fidelity) come from the AWS CloudWatch series of the Numenta
Anomaly Benchmark; every statistic is taken on 5-minute means of a fixed seed's backfill.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from common.schema import METRICS
from conftest import REPO
from producer.config import ProducerConfig
from producer.model import fidelity
from producer.model.roles import DEFAULT_MIX, DEFAULT_PATTERN, ROLES, RoleMix
from producer.model.workload import Model, finish
from producer.sources.series import Series
from producer.sources.sim import SimSource

SEED, DEVICES, DAYS = 42, 10, 7
START_MS = 1_754_265_600_000  # Monday 2025-08-04 00:00 UTC
CHUNK = 18_000  # ticks: five hours, so chunks end on five-minute boundaries


@pytest.fixture(scope="module")
def backfill() -> tuple[np.ndarray, float, list[str]]:
    """Five-minute means (buckets, devices, 4) of the producer's defaults over 7 days at 1 Hz,
    the labelled fraction of its samples, and each device's role."""
    config = ProducerConfig()
    series = Series(SEED, DEVICES, 1.0, START_MS, START_MS, 0)
    source = SimSource(
        series,
        config.anomaly_rate,
        config.anomaly_kinds,
        anomaly_durations=config.anomaly_durations,
        roles=config.roles,
    )
    means, labelled = [], 0
    for first in range(0, DAYS * 86_400, CHUNK):
        rows = source.batch(first, first + CHUNK - 1).rows
        values = np.stack([rows[m].reshape(CHUNK, DEVICES) for m in METRICS], axis=-1)
        means.append(fidelity.five_minute_means(rows["ts_ms"][::DEVICES], values))
        labelled += int((rows["anomaly"] > 0).sum())
    return np.concatenate(means), labelled / (DAYS * 86_400 * DEVICES), source.role_names


def stat(means: np.ndarray, device: int, metric: str, statistic: str) -> float:
    return fidelity.statistics(means[:, device, METRICS.index(metric)], metric)[statistic]


def test_default_fleet_mixes_every_role(backfill):
    """The ten devices of a default fleet hold the default pattern exactly: 3 web, 2 db,
    1 cache, 2 batch, 2 idle."""
    roles = backfill[2]
    assert sorted(roles) == sorted(DEFAULT_PATTERN)
    assert {r: roles.count(r) for r in ROLES} == {
        "idle": 2,
        "web": 3,
        "batch": 2,
        "db": 2,
        "cache": 1,
    }


@pytest.mark.parametrize("target", fidelity.TARGETS[:2], ids=lambda t: f"{t.metric}-{t.statistic}")
def test_cpu_changes_slowly_and_is_right_skewed_on_every_device(backfill, target):
    """cpu's lag-1 autocorrelation is within 0.3-0.99 and its skew at least 0.5 on every
    device: mostly idle, sometimes busy, never a random walk nor white noise."""
    means, _, roles = backfill
    values = {f"{d}:{roles[d]}": stat(means, d, target.metric, target.statistic) for d in range(10)}
    assert all(target.met(v) for v in values.values()), values


@pytest.mark.parametrize("target", fidelity.TARGETS[2:6], ids=lambda t: f"{t.metric}-{t.statistic}")
def test_disk_and_net_bursts_survive_aggregation(backfill, target):
    """disk_io and net keep a coefficient of variation of at least 1 and a skew of at least 4
    after 5-minute averaging on every device: their bursts last minutes to hours."""
    means, _, roles = backfill
    values = {f"{d}:{roles[d]}": stat(means, d, target.metric, target.statistic) for d in range(10)}
    assert all(target.met(v) for v in values.values()), values


def test_roles_that_serve_users_follow_the_day(backfill):
    """cpu correlates with itself a day later on web, db and cache (>= 0.3) and not on batch
    and idle machines (< 0.3)."""
    means, _, roles = backfill
    daily = {d: stat(means, d, "cpu", "daily") for d in range(10)}
    serving = [daily[d] for d in range(10) if roles[d] in fidelity.SERVING_ROLES]
    others = [daily[d] for d in range(10) if roles[d] not in fidelity.SERVING_ROLES]
    assert len(serving) == 6 and all(fidelity.DAILY_TARGET.met(v) for v in serving), daily
    assert all(v < 0.3 for v in others), daily


def test_net_is_long_range_dependent(backfill):
    """net's Hurst exponent (aggregated variance) is 0.6-0.95 in the median over devices and
    above 0.5 (memoryless) on each."""
    means, _, _ = backfill
    hurst = [stat(means, d, "net", "hurst") for d in range(10)]
    target = fidelity.TARGETS[6]
    assert target.statistic == "hurst" and target.met(float(np.median(hurst))), hurst
    assert min(hurst) > 0.5, hurst


def test_at_most_five_percent_of_samples_are_labelled(backfill):
    """At default settings anomalies stay rare: 2-5 % of the samples carry a label."""
    labelled = backfill[1]
    assert 0.02 <= labelled <= fidelity.LABELLED_MAX, labelled


def test_hurst_estimator_tells_memory_from_none():
    """The estimator gives about 0.5 for white noise, and near 1 for a random walk's steps
    summed (persistence at every scale)."""
    rng = np.random.default_rng(0)
    white = rng.normal(size=20_000)
    assert 0.45 <= fidelity.hurst(white) <= 0.55
    assert fidelity.hurst(np.cumsum(white)) > 0.9


def test_five_minute_means_ignore_dropouts():
    """Buckets average the values present; an all-missing bucket of a single series is left
    out."""
    ts = np.arange(0, 900_000, 1000)
    x = np.ones(900)
    x[300:600] = np.nan
    x[600:] = 3.0
    assert fidelity.five_minute_means(ts, x).tolist() == [1.0, 3.0]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_alone_meets_the_cpu_and_io_targets_in_the_median(role):
    """A fleet of four devices of one role, anomaly-free, meets every target in the median
    over its devices (daily only for roles that serve users)."""
    ts = START_MS + np.arange(0, DAYS * 86_400_000, 1000)
    model = Model(7, 4, RoleMix.parse(role))
    means = np.concatenate(
        [
            fidelity.five_minute_means(ts[i : i + CHUNK], finish(model.values(ts[i : i + CHUNK])))
            for i in range(0, len(ts), CHUNK)
        ]
    )
    targets = [*fidelity.TARGETS]
    if role in fidelity.SERVING_ROLES:
        targets.append(fidelity.DAILY_TARGET)
    for t in targets:
        median = float(np.median([stat(means, d, t.metric, t.statistic) for d in range(4)]))
        assert t.met(median), (t.metric, t.statistic, median)


def test_fidelity_script_reads_our_csv_and_a_timestamp_value_file(tmp_path):
    """docs/fidelity.py prints the statistics of a backfill CSV (roles named from its seed) and
    of a NAB-style timestamp,value file beside the targets."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--duration", "2d", "--devices", "2"]
        + ["--seed", "3", "--start", "2025-08-04", "--out", "ours.csv", "--no-progress"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    script = str(REPO / "docs" / "fidelity.py")
    ours = subprocess.run(
        [sys.executable, script, "ours.csv", "--seed", "3"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    names = DEFAULT_MIX.names(3, np.arange(2))
    assert f"host-01 ({names[0]})" in ours and f"host-02 ({names[1]})" in ours
    assert "target" in ours and "labelled:" in ours

    ts = np.datetime64("2025-08-04") + np.arange(2016) * np.timedelta64(5, "m")
    value = np.round(np.exp(np.random.default_rng(1).normal(size=2016)), 3)
    rows = (f"{str(t).replace('T', ' ')},{v:.3f}" for t, v in zip(ts, value, strict=True))
    (tmp_path / "nab.csv").write_text("\n".join(["timestamp,value", *rows]) + "\n")
    nab = subprocess.run(
        [sys.executable, script, "nab.csv", "--metric", "net"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    row = next(line for line in nab.splitlines() if line.split()[:1] == ["nab"])
    assert f"{value.std() / value.mean():.2f}" in row.split()  # net's coefficient of variation
    assert row.split()[1] == "-"  # a net file has no cpu
