"""The files a new user reads: one timestamp format per CSV, one series per file (a new one
announced), a `verify` that never mixes runs, and types that load as pandas users expect."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from conftest import REPO, Pipeline, wait_until

START = "2025-08-04T00:00:00"


def rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:] if path.exists() else []


def csvs(data: Path) -> list[Path]:
    """Every log file in `data` (not the windows, gaps or series files)."""
    return sorted(
        p for p in data.glob("stream_log*.csv") if not p.stem.endswith((".windows", ".gaps"))
    )


def command(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python ARGS` in `cwd` with no STREAM_* setting from the test's environment."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_rate_change_never_mixes_timestamp_formats_in_a_file(pipeline: Pipeline):
    """`ctl rate 1` on a 2 Hz stream: the seconds-precision rows start a new file, so each
    file has one timestamp format and `pd.read_csv(path, parse_dates=["timestamp"])` gives
    datetimes for every one, `data/stream_log.csv` included; verify finds the log whole."""
    pipeline.producer("--rate", "2", "--speed", "5", "--devices", "2")
    logger = pipeline.logger("--flush-interval", "0.1")
    data = pipeline.cwd / "data"
    wait_until(lambda: sum(len(rows(p)) for p in csvs(data)) > 20, timeout=15)
    changed = pipeline.ctl("rate", "1")
    assert changed.returncode == 0, changed.stderr

    def seconds_rows() -> list[str]:
        return [r for p in csvs(data) for r in rows(p) if len(r.split(",")[0]) == 19]

    wait_until(lambda: len(seconds_rows()) > 10, timeout=15)
    logger.stop()
    files = csvs(data)
    assert len(files) >= 2, files
    assert any("rotated" in line or "timestamp" in line for line in logger.lines), logger.lines
    for path in files:
        stamps = {len(line.split(",")[0]) for line in rows(path)}
        assert len(stamps) == 1, (path, stamps)
        frame = pd.read_csv(path, parse_dates=["timestamp"])
        assert pd.api.types.is_datetime64_any_dtype(frame["timestamp"]), (path, frame.dtypes)
    live = pd.read_csv(data / "stream_log.csv", parse_dates=["timestamp"])
    assert pd.api.types.is_datetime64_any_dtype(live["timestamp"])
    report = command(pipeline.cwd, "-m", "logger", "verify", *map(str, files))
    assert report.returncode == 0, report.stdout


def test_a_new_series_is_announced_and_starts_a_new_file(pipeline: Pipeline):
    """A producer restarted with other settings (1 device, then 3; then another seed while
    the logger was down) starts a new series: the logger says so and starts a new file, so
    every file holds one series and the earlier rows stay in their own numbered file."""
    first = pipeline.producer("--rate", "10", "--devices", "1", "--seed", "1")
    logger = pipeline.logger("--flush-interval", "0.1")
    data = pipeline.cwd / "data"
    wait_until(lambda: len(rows(data / "stream_log.csv")) > 10, timeout=15)
    first.stop()
    second = pipeline.producer("--rate", "10", "--devices", "3", "--seed", "1")
    logger.wait_for("new series", timeout=15)
    wait_until(lambda: len(rows(data / "stream_log.csv")) > 15, timeout=15)
    logger.stop()
    second.stop()
    pipeline.producer("--rate", "10", "--devices", "3", "--seed", "2")
    restarted = pipeline.logger("--flush-interval", "0.1")
    restarted.wait_for("new series", timeout=15)
    wait_until(lambda: len(rows(data / "stream_log.csv")) > 15, timeout=15)
    restarted.stop()
    files = csvs(data)
    assert [p.name for p in files] == [
        "stream_log-000001.csv",
        "stream_log-000002.csv",
        "stream_log.csv",
    ], files
    fleet = {"host-01", "host-02", "host-03"}
    assert [{line.split(",")[5] for line in rows(p)} for p in files] == [{"host-01"}, fleet, fleet]
    series = [json.loads(p.with_name(p.stem + ".series.json").read_text()) for p in files]
    seeds = [s["series"]["seed"] for s in series]
    assert seeds == [1, 1, 2] and [s["series"]["devices"] for s in series] == [1, 3, 3]
    report = command(pipeline.cwd, "-m", "logger", "verify")
    assert report.returncode == 0, report.stdout
    assert report.stdout.count("series:") == 3, report.stdout


def test_verify_tells_runs_apart(pipeline: Pipeline):
    """An earlier run's log (one logger) and a later run's two logger shards, whose seqs
    start over (the state file was removed): `verify data/stream_log*.csv` and a bare
    `verify` check each series on its own and find nothing wrong."""
    data = pipeline.cwd / "data"
    first = pipeline.producer("--rate", "20", "--devices", "4", "--seed", "1")
    logger = pipeline.logger("--flush-interval", "0.1")
    wait_until(lambda: len(rows(data / "stream_log.csv")) > 100, timeout=15)
    logger.stop()
    first.stop()
    (data / "producer_state.json").unlink()
    pipeline.producer("--rate", "20", "--devices", "4", "--seed", "2")
    shards = [pipeline.logger("--shard", f"{i}/2", "--flush-interval", "0.1") for i in (1, 2)]
    parts = [data / f"stream_log.{i}-of-2.csv" for i in (1, 2)]
    wait_until(lambda: all(len(rows(p)) > 50 for p in parts), timeout=15)
    for proc in shards:
        proc.stop()
    files = [str(p.relative_to(pipeline.cwd)) for p in csvs(data)]
    assert len(files) == 3, files
    for args in (files, []):
        report = command(pipeline.cwd, "-m", "logger", "verify", *args)
        assert report.returncode == 0, report.stdout
        assert "duplicates: 0" in report.stdout and "out of order: 0" in report.stdout
        assert report.stdout.count("series:") == 2, report.stdout


def generate(cwd: Path, out: str, *args: str) -> None:
    made = command(
        cwd,
        *("-m", "producer", "generate", "--no-progress", "--out", out, "--start", START),
        *args,
    )
    assert made.returncode == 0, made.stderr


def test_ids_load_as_nullable_integers_and_times_as_utc(tmp_path: Path):
    """In pandas, a backfill's Parquet has its ids as nullable integers (not float64 like
    2.923776e+12), and the windows file's times are UTC, so they compare with the samples'."""
    generate(tmp_path, "train.parquet", "--duration", "2h", "--devices", "3", "--seed", "5")
    frame = pd.read_parquet(tmp_path / "train.parquet")
    assert (str(frame["anomaly_id"].dtype), str(frame["anomaly_root"].dtype)) == ("Int64", "Int64")
    labelled = frame[frame["anomaly_id"].notna()]
    assert len(labelled) and (labelled["anomaly_id"] == labelled["anomaly_root"]).all()
    assert int(labelled["anomaly_id"].iloc[0]) == labelled["anomaly_id"].iloc[0]
    windows = pd.read_csv(tmp_path / "train.windows.csv", parse_dates=["start", "end"])
    assert str(windows["start"].dt.tz) == "UTC" and str(windows["end"].dt.tz) == "UTC"
    first = windows.iloc[0]
    inside = frame[(frame["timestamp"] >= first["start"]) & (frame["timestamp"] <= first["end"])]
    assert (inside["anomaly_id"] == first["anomaly_id"]).any()
    assert pq.read_schema(tmp_path / "train.parquet").field("anomaly_id").type == "int64"


def test_a_backfill_windows_file_is_sorted_by_start(tmp_path: Path):
    """A backfill's windows file lists events in order of their start, whatever order they
    ended in (long events overlap short ones on other devices)."""
    args = ("--duration", "6h", "--devices", "8", "--seed", "3", "--anomaly-rate", "20")
    generate(tmp_path, "train.csv", *args)
    windows = pd.read_csv(tmp_path / "train.windows.csv", parse_dates=["start", "end"])
    assert len(windows) > 100
    assert windows["start"].is_monotonic_increasing
