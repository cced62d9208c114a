"""Fidelity: the statistics of real host metrics, measured on our data, beside their targets.

pip install -r docs/requirements.txt
python docs/fidelity.py                              # a 7-day backfill at default settings
python docs/fidelity.py --plot docs/roles.png        # ... and draw one week of each role
python docs/fidelity.py data/train.csv --seed 42     # a CSV of ours (roles from the seed)
python docs/fidelity.py ec2_cpu_utilization_5f5533.csv --metric cpu   # a timestamp,value file

Every statistic is taken on 5-minute means (producer.model.fidelity), the resolution of
the AWS CloudWatch series in the Numenta Anomaly Benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.schema import ANOMALY_KINDS, METRICS  # noqa: E402
from producer.model import fidelity  # noqa: E402
from producer.model.anomalies import DEFAULT_RATE_PER_HOUR  # noqa: E402
from producer.model.roles import ROLES, RoleMix  # noqa: E402
from producer.sources.series import Series  # noqa: E402
from producer.sources.sim import (
    SimSource,  # noqa: E402
    device_name,  # noqa: E402
)

START_MS = 1_754_265_600_000  # Monday 2025-08-04 00:00 UTC
CHUNK_TICKS_S = 18_000  # five hours: chunks end on five-minute boundaries
COLUMNS = [(t.metric, t.statistic) for t in fidelity.TARGETS[:2]] + [
    ("cpu", "daily"),
    *[(t.metric, t.statistic) for t in fidelity.TARGETS[2:]],
]
UNITS = {"cpu": "cpu %", "mem": "mem %", "disk_io": "disk_io MB/s", "net": "net KB/s"}


def simulate(
    seed: int, devices: int, days: float, rate_per_hour: float, mix: RoleMix
) -> tuple[np.ndarray, np.ndarray, float]:
    """Five-minute bucket starts (ms), means (buckets, devices, 4) and the labelled fraction of
    a 1 Hz backfill, made exactly as `python -m producer generate` makes it."""
    series = Series(seed, devices, 1.0, START_MS, START_MS, 0)
    source = SimSource(series, rate_per_hour, ANOMALY_KINDS, roles=mix)
    ticks = int(days * 86_400)
    means, starts, labelled = [], [], 0
    for first in range(0, ticks, CHUNK_TICKS_S):
        last = min(ticks, first + CHUNK_TICKS_S) - 1
        rows = source.batch(first, last).rows
        n = last - first + 1
        values = np.stack([rows[m].reshape(n, devices) for m in METRICS], axis=-1)
        ts = rows["ts_ms"].reshape(n, devices)[:, 0]
        means.append(fidelity.five_minute_means(ts, values))
        starts.append(np.unique(ts // fidelity.FIVE_MINUTES_MS) * fidelity.FIVE_MINUTES_MS)
        labelled += int((rows["anomaly"] > 0).sum())
    return np.concatenate(starts), np.concatenate(means), labelled / (ticks * devices)


def read_csv(path: Path, metric: str) -> tuple[dict[str, np.ndarray], float | None]:
    """Five-minute means per device of one of our CSVs, or of a timestamp,value file (its one
    series, as `metric`); and the labelled fraction of ours."""
    frame = pd.read_csv(path)
    frame["ts_ms"] = pd.to_datetime(frame["timestamp"]).astype("datetime64[ms]").astype("int64")
    if "value" in frame.columns and "device" not in frame.columns:
        frame = frame.sort_values("ts_ms")
        means = fidelity.five_minute_means(frame["ts_ms"].to_numpy(), frame["value"].to_numpy())
        empty = np.full((len(means), len(METRICS)), np.nan)
        empty[:, METRICS.index(metric)] = means
        return {path.stem: empty}, None
    per_device = {}
    for device, rows in frame.groupby("device", sort=True):
        rows = rows.sort_values("ts_ms")
        values = rows[list(METRICS)].to_numpy(np.float64)
        per_device[str(device)] = fidelity.five_minute_means(rows["ts_ms"].to_numpy(), values)
    labelled = float(frame["anomaly_id"].notna().mean()) if "anomaly_id" in frame else None
    return per_device, labelled


def table(series: dict[str, np.ndarray], roles: dict[str, str]) -> str:
    """One line per series (named with its role) of every statistic, then the targets."""
    header = ["series", *[f"{m} {s}" for m, s in COLUMNS]]
    lines = [header]
    for name, means in series.items():
        cells = [f"{name} ({roles[name]})" if name in roles else name]
        for metric, statistic in COLUMNS:
            column = means[:, METRICS.index(metric)]
            if np.isnan(column).all():
                cells.append("-")
                continue
            value = fidelity.statistics(column, metric)[statistic]
            judged = statistic != "daily" or roles.get(name) in fidelity.SERVING_ROLES
            met = not judged or _met(metric, statistic, value)
            cells.append(f"{value:.2f}" + ("" if met else " *"))
        lines.append(cells)
    lines.append(["target", *[_target(m, s) for m, s in COLUMNS]])
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in lines]
    serving = ", ".join(fidelity.SERVING_ROLES)
    return "\n".join(text) + f"\n(* outside the target; cpu daily: judged on {serving})"


def _targets(metric: str, statistic: str) -> list[fidelity.StatisticTarget]:
    every = (*fidelity.TARGETS, fidelity.DAILY_TARGET)
    return [t for t in every if (t.metric, t.statistic) == (metric, statistic)]


def _met(metric: str, statistic: str, value: float) -> bool:
    return all(t.met(value) for t in _targets(metric, statistic))


def _target(metric: str, statistic: str) -> str:
    return " ".join(t.describe() for t in _targets(metric, statistic))


def plot(starts: np.ndarray, means: np.ndarray, names: list[str], roles: list[str], out: str):
    """One week of the first device of each role at five-minute resolution: docs/roles.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [role for role in ROLES if role in roles]
    time = pd.to_datetime(starts, unit="ms")
    fig, axes = plt.subplots(len(shown), 4, figsize=(15, 2.1 * len(shown)), sharex=True)
    for row, role in enumerate(shown):
        device = roles.index(role)
        for col, metric in enumerate(METRICS):
            ax = axes[row, col]
            ax.plot(time, means[:, device, col], lw=0.6, color="#1f4e79")
            ax.set_ylim(bottom=0)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(UNITS[metric], fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{role}\n({names[device]})", fontsize=9)
    for ax in axes[-1]:
        ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%a"))
    fig.suptitle(
        "One simulated week of each role, 5-minute means (default settings: seed 42, "
        f"{DEFAULT_RATE_PER_HOUR:g} anomaly per device-hour)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=80)
    click.echo(f"wrote {out}", err=True)


@click.command()
@click.argument("csv", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--seed", type=int, help="Seed of the backfill [default: 42], or of CSV (names its roles)."
)
@click.option("--devices", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--days", default=7.0, show_default=True, type=click.FloatRange(1, 60))
@click.option("--roles", "mix", default="mix", show_default=True, help="As the producer's.")
@click.option(
    "--anomaly-rate", default=DEFAULT_RATE_PER_HOUR, show_default=True, type=click.FloatRange(0)
)
@click.option(
    "--metric",
    default="cpu",
    show_default=True,
    type=click.Choice(METRICS),
    help="What the value of a timestamp,value file is.",
)
@click.option("--plot", "out", default=None, help="Draw one week of each role into this PNG.")
def main(
    csv: Path | None,
    seed: int | None,
    devices: int,
    days: float,
    mix: str,
    anomaly_rate: float,
    metric: str,
    out: str | None,
) -> None:
    """Print the fidelity statistics of a backfill (simulated here, or a CSV) beside the targets."""
    try:
        role_mix = RoleMix.parse(mix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--roles") from None
    if csv is None:
        seed = 42 if seed is None else seed
        starts, means, labelled = simulate(seed, devices, days, anomaly_rate, role_mix)
        names = [device_name(i) for i in range(devices)]
        series = {name: means[:, i] for i, name in enumerate(names)}
        click.echo(f"{days:g} days at 1 Hz, {devices} devices, seed {seed}, roles {role_mix}")
    else:
        series, labelled = read_csv(csv, metric)
        names = list(series)
        click.echo(f"{csv}: {len(series)} series")
    ours = [n for n in names if n.startswith("host-") and n[5:].isdigit()]
    indices = np.array([int(n[5:]) - 1 for n in ours], np.int64)
    roles = dict(zip(ours, role_mix.names(seed, indices), strict=True)) if seed is not None else {}
    click.echo(table(series, roles))
    if labelled is not None:
        click.echo(f"labelled: {100 * labelled:.2f} % of samples (target <= 5 %)")
    if out:
        if csv is not None:
            raise click.UsageError("--plot draws a simulated backfill; leave out the CSV")
        plot(starts, means, names, [roles[n] for n in names], out)


if __name__ == "__main__":
    main()
