"""Draw a simulated day of one device with its labelled anomalies: docs/day.png.

pip install -r docs/requirements.txt
python docs/plot_day.py [--seed 7] [--role web] [--out docs/day.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import schema  # noqa: E402
from producer.model.roles import ROLES, RoleMix  # noqa: E402
from producer.sources.series import Series  # noqa: E402
from producer.sources.sim import SimSource  # noqa: E402

START_MS = 1_754_265_600_000  # Monday 2025-08-04 00:00 UTC
UNITS = {"cpu": "cpu %", "mem": "mem %", "disk_io": "disk_io MB/s", "net": "net KB/s"}


@click.command()
@click.option("--seed", default=7, show_default=True)
@click.option("--anomaly-rate", default=1.0, show_default=True, help="Per device per hour.")
@click.option("--role", default="web", show_default=True, type=click.Choice(list(ROLES)))
@click.option("--out", default="docs/day.png", show_default=True, type=click.Path())
def main(seed: int, anomaly_rate: float, role: str, out: str) -> None:
    """One device, one day at 1 Hz, anomalies shaded by kind."""
    series = Series(seed, 1, 1.0, START_MS, START_MS, 0)
    source = SimSource(series, anomaly_rate, schema.ANOMALY_KINDS, roles=RoleMix.parse(role))
    rows = source.batch(0, 86_399).rows
    time = pd.to_datetime(rows["ts_ms"], unit="ms")
    kinds = np.array(["", *schema.ANOMALY_KINDS])[rows["anomaly"]]
    colours = dict(zip(schema.ANOMALY_KINDS, plt.cm.tab10.colors, strict=False))

    fig, axes = plt.subplots(4, 1, figsize=(13, 9), sharex=True)
    for ax, metric in zip(axes, schema.METRICS, strict=True):
        ax.plot(time, rows[metric], lw=0.4, color="#333333")
        ax.set_ylabel(UNITS[metric])
        for event in np.unique(rows["anomaly_id"][rows["anomaly_id"] > 0]):
            where = np.flatnonzero(rows["anomaly_id"] == event)
            kind = kinds[where[0]]
            mask = int(rows["anomaly_metrics"][where[0]])
            touched = mask & (1 << schema.METRICS.index(metric))
            ax.axvspan(
                time[where[0]],
                time[where[-1]],
                color=colours[kind],
                alpha=0.45 if touched else 0.12,
            )
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.45) for c in colours.values()]
    fig.legend(handles, colours.keys(), loc="upper center", ncol=9, fontsize=8, frameon=False)
    axes[0].set_title(
        f"One simulated day of a {role} device (seed {seed}, 1 Hz, {anomaly_rate:g} "
        "anomalies/hour); "
        "shading: labelled anomaly (darker on the metrics it alters)",
        fontsize=9,
        pad=22,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=90)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
