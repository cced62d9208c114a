"""`generate`: a training set in memory, made by the very backfill `python -m producer
generate` runs, with the same options, checked by the same command-line options."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import click
import pandas as pd
import pyarrow as pa

from streamsim import frames, options
from streamsim._isolated import project

Duration = str | float | timedelta


@dataclass(frozen=True)
class Dataset:
    """What `generate` made: the samples, the anomaly windows, and the settings that make
    them again (`seed` is the one drawn when none was given). Unpacks as
    `samples, windows = generate(...)`."""

    samples: pd.DataFrame
    windows: pd.DataFrame
    seed: int
    start: pd.Timestamp
    rate: float
    devices: int

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter((self.samples, self.windows))


def generate(
    duration: Duration,
    *,
    devices: int | None = None,
    rate: float | None = None,
    seed: int | None = None,
    start: str | datetime | None = None,
    roles: str | Mapping[str, int] | None = None,
    scenario: str | Path | None = None,
    anomaly_rate: float | None = None,
    anomaly_kinds: str | Mapping[str, float] | None = None,
    anomaly_durations: str | Mapping[str, tuple[Duration, Duration]] | None = None,
    workers: int | None = None,
) -> Dataset:
    """The simulation over `duration` of simulated time, as `python -m producer generate`
    writes it, in memory: `(samples, windows)` DataFrames.

    Every option is the CLI's, in Python form, and None leaves the CLI's default:
    `duration` `"7d"`, `"90s"`, seconds or a timedelta; `devices` (1); `rate` samples per
    second per device (1); `seed` (random: read it back from `.seed`); `start` the first
    sample's time, ISO text or a datetime, UTC unless it says otherwise (the span that ends
    now); `roles` `"mix"`, `"db"`, `"web=3,db=1"` or `{"web": 3, "db": 1}`; `scenario` a
    scenario file (its fleet replaces `devices` and `roles`); `anomaly_rate` per device per
    hour (1); `anomaly_kinds` `"all,spike=3"` or `{"spike": 3, "dip": 1}`;
    `anomaly_durations` `"spike=1s-10s"` or `{"spike": ("1s", "10s")}`. `workers`: processes
    (default: one per core).

    Guarantees: the samples are row for row, value for value, the rows of the CLI's CSV or
    Parquet file for the same settings (the same backfill code makes them), with the
    dtypes of `streamsim.frames`; the windows are the rows of its windows file, in its order.
    A value the CLI refuses raises ValueError with the CLI's one-line message.
    """
    cli = project("producer.cli")
    backfill = project("producer.backfill")
    outputs = project("producer.outputs")
    ctx = options.parse(
        cli.generate,
        {
            "duration": duration,
            "devices": devices,
            "rate": rate,
            "seed": seed,
            "start": start,
            "roles": roles,
            "scenario": scenario,
            "anomaly_rate": anomaly_rate,
            "anomaly_kinds": anomaly_kinds,
            "anomaly_durations": anomaly_durations,
        },
    )
    given = ctx.params
    try:
        fleet = cli._fleet(ctx, given["scenario"], given["devices"])
    except click.ClickException as exc:
        raise options.OptionError(options.message(exc)) from None
    series, ticks = backfill.plan(
        fleet, given["rate"], given["duration"], given["seed"], given["start"]
    )
    table = outputs.ArrowTable()
    windows = io.StringIO()
    backfill.run(
        (table, windows),
        series,
        ticks,
        given["anomaly_rate"],
        given["anomaly_kinds"],
        workers=workers,
        anomaly_durations=given["anomaly_durations"],
        roles=given["roles"],
        scenario=given["scenario"],
    )
    windows_table = frames.read_csv(
        pa.py_buffer((project("common.windows").HEADER + "\n" + windows.getvalue()).encode()),
        frames.WINDOW_TYPES,
        "windows",
    )
    return Dataset(
        samples=frames.frame(table.table()),
        windows=frames.windows([windows_table], "windows"),
        seed=series.seed,
        start=pd.Timestamp(series.origin_ms, unit="ms", tz="UTC"),
        rate=series.rate,
        devices=fleet,
    )
