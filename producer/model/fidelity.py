"""How close simulated series are to real host metrics: the statistics and their targets.

Real references: the AWS CloudWatch series of the Numenta Anomaly Benchmark (EC2, RDS,
ELB at 5-minute resolution). Every statistic is taken on 5-minute means, where bursts
that last seconds have vanished and only those of minutes to hours remain.
docs/fidelity.py prints them for a backfill or any timestamp,value file; the tests pin
them on a fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIVE_MINUTES_MS = 300_000
DAY_STEPS = 288  # five-minute steps in a day


@dataclass(frozen=True)
class StatisticTarget:
    """A statistic of one metric and the range real series fall in (None: unbounded)."""

    metric: str
    statistic: str
    low: float | None
    high: float | None
    note: str

    def met(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.high is None:
            return f">= {self.low:g}"
        if self.low is None:
            return f"<= {self.high:g}"
        return f"{self.low:g}..{self.high:g}"


TARGETS = (
    StatisticTarget("cpu", "lag1", 0.3, 0.99, "real cpu changes slowly, not a random walk"),
    StatisticTarget("cpu", "skew", 0.5, None, "real cpu: skew median 1.9 (0.5-14), mostly idle"),
    StatisticTarget("disk_io", "cv", 1.0, None, "real disk: 4.6-6.1"),
    StatisticTarget("disk_io", "skew", 4.0, None, "bursts of minutes to hours"),
    StatisticTarget("net", "cv", 1.0, None, "real net: 1.0-8.1"),
    StatisticTarget("net", "skew", 4.0, None, "bursts of minutes to hours"),
    StatisticTarget("net", "hurst", 0.6, 0.95, "real traffic is self-similar, H about 0.7-0.9"),
)
DAILY_TARGET = StatisticTarget("cpu", "daily", 0.3, None, "roles that serve users follow the day")
SERVING_ROLES = ("web", "db", "cache")  # the roles DAILY_TARGET is about
LABELLED_MAX = 0.05  # at most this fraction of samples labelled at default settings


def five_minute_means(ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Means of `values` (n, ...) over five-minute buckets of `ts_ms` (n,), sorted, ignoring NaN
    (dropouts); buckets without a value are left out."""
    bucket = np.asarray(ts_ms, np.int64) // FIVE_MINUTES_MS
    edges = np.flatnonzero(np.diff(bucket)) + 1
    starts = np.concatenate([[0], edges])
    x = np.asarray(values, np.float64)
    present = ~np.isnan(x)
    sums = np.add.reduceat(np.where(present, x, 0.0), starts, axis=0)
    counts = np.add.reduceat(present.astype(np.int64), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    if means.ndim == 1:
        return means[counts > 0]
    return means


def skew(x: np.ndarray) -> float:
    d = x - x.mean()
    return float((d**3).mean() / (d**2).mean() ** 1.5)


def cv(x: np.ndarray) -> float:
    """Coefficient of variation: standard deviation over mean."""
    return float(x.std() / x.mean())


def lag_correlation(x: np.ndarray, lag: int) -> float:
    return float(np.corrcoef(x[:-lag], x[lag:])[0, 1]) if len(x) > lag + 2 else float("nan")


def hurst(x: np.ndarray) -> float:
    """Hurst exponent by aggregated variance: Var(mean of m) ~ m^(2H - 2), over m from 1 to a
    tenth of the series (H = 0.5: no memory; 0.5 < H < 1: long-range dependence)."""
    sizes = np.unique(np.round(np.logspace(0, np.log10(max(2, len(x) // 10)), 12)).astype(int))
    variances = []
    for m in sizes:
        blocks = len(x) // m
        variances.append(x[: blocks * m].reshape(blocks, m).mean(axis=1).var())
    slope = np.polyfit(np.log(sizes), np.log(variances), 1)[0]
    return float(1.0 + slope / 2.0)


def statistics(five_minute: np.ndarray, metric: str) -> dict[str, float]:
    """Every statistic of one metric's five-minute means."""
    x = five_minute[~np.isnan(five_minute)]
    stats = {
        "mean": float(x.mean()),
        "cv": cv(x),
        "skew": skew(x),
        "lag1": lag_correlation(x, 1),
        "daily": lag_correlation(x, DAY_STEPS),
    }
    if metric == "net":
        stats["hurst"] = hurst(x)
    return stats
