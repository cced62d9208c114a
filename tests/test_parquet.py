"""Backfill to Parquet: the same samples as the CSV, typed, through the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common import arrow, schema
from conftest import REPO

START = "2025-08-04T00:00:00"


def generate(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m producer generate ARGS` run to its end, with no STREAM_* settings leaking in."""
    return subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--no-progress", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def csv_as_typed(path: Path) -> pd.DataFrame:
    """The CSV as the documented recipe reads it (ids as nullable integers), timestamps
    marked UTC (as its text is) at millisecond unit."""
    ids = dict.fromkeys(("anomaly_id", "anomaly_root"), "Int64")
    frame = pd.read_csv(path, parse_dates=["timestamp"], dtype=ids)
    frame["timestamp"] = frame["timestamp"].dt.tz_localize("UTC").astype("datetime64[ms, UTC]")
    return frame


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, *words: str) -> None:
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


TYPED = {
    "timestamp": "datetime64[ms, UTC]",
    **dict.fromkeys(schema.METRICS, "float64"),
    "device": "category",
    "seq": "int64",
    "anomaly": "category",
    "anomaly_id": "Int64",  # nullable integers (the file's pandas metadata says so)
    "anomaly_root": "Int64",
    "event": "category",
    "anomaly_metrics": "category",
}


@pytest.mark.parametrize(
    "rate, duration, millis",
    [
        ("1", "1h", False),  # whole seconds
        ("10", "6m", True),  # milliseconds
        ("0.3", "1h", False),  # ticks between whole seconds, shown floored like the CSV
    ],
)
def test_parquet_equals_the_csv_row_for_row(tmp_path, rate, duration, millis):
    """The same backfill to CSV and to Parquet gives equal rows, the Parquet's typed, missing
    values and absent labels as nulls, and the same windows file beside each."""
    args = ["--rate", rate, "--duration", duration, "--devices", "2", "--seed", "7"]
    args += ["--start", START, "--anomaly-rate", "60"]
    for out in ("csv/train.csv", "parquet/train.parquet"):
        result = generate(tmp_path, *args, "--out", out)
        assert result.returncode == 0, result.stderr
    typed = pd.read_parquet(tmp_path / "parquet" / "train.parquet")
    text = csv_as_typed(tmp_path / "csv" / "train.csv")

    assert list(typed.columns) == list(schema.COLUMNS)
    assert typed.dtypes.astype(str).to_dict() == TYPED
    assert len(typed) > 0 and typed["anomaly"].notna().any() and typed["cpu"].isna().any()
    assert (typed["timestamp"].dt.microsecond != 0).any() == millis
    assert list(typed["anomaly"].cat.categories) == list(schema.ANOMALY_KINDS)
    assert list(typed["anomaly_metrics"].cat.categories) == list(schema.METRIC_SETS[1:])
    assert typed["anomaly_metrics"].notna().equals(typed["anomaly"].notna())
    # categories here, text (or all-NaN) in the CSV
    labels = ("device", "anomaly", "event", "anomaly_metrics")
    shown = typed.astype(dict.fromkeys(labels, object)).where(typed.notna(), np.nan)
    text = text.astype(dict.fromkeys(labels, object)).where(text.notna(), np.nan)
    pd.testing.assert_frame_equal(shown, text, check_exact=True)

    assert pq.read_schema(tmp_path / "parquet" / "train.parquet").equals(arrow.SCHEMA)
    table = pq.read_table(tmp_path / "parquet" / "train.parquet")
    assert table.column("anomaly_id").null_count == typed["anomaly"].isna().sum()
    for metric in schema.METRICS:  # missing is null in the file, not a NaN value
        assert table.column(metric).null_count == typed[metric].isna().sum()
    windows = (tmp_path / "parquet" / "train.windows.csv").read_bytes()
    assert windows.count(b"\n") > 2
    assert windows == (tmp_path / "csv" / "train.windows.csv").read_bytes()


def test_format_option_names_the_format_whatever_the_suffix(tmp_path):
    """--format parquet writes Parquet to any name, and without --out to data/train.parquet."""
    args = ["--duration", "10s", "--devices", "3", "--seed", "1", "--start", START]
    assert generate(tmp_path, *args, "--format", "parquet").returncode == 0
    assert generate(tmp_path, *args, "--format", "parquet", "--out", "t.data").returncode == 0
    default = pq.read_table(tmp_path / "data" / "train.parquet")
    assert default.num_rows == 30
    assert pq.read_table(tmp_path / "t.data").equals(default)
    assert (tmp_path / "t.windows.csv").exists()
    result = generate(tmp_path, *args, "--format", "csv", "--out", "t.parquet")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t.parquet").read_text().startswith(schema.CSV_HEADER + "\n")


def test_bad_format_is_a_one_line_error(tmp_path):
    """An unknown --format stops with status 2 and one line naming it and the formats allowed."""
    result = generate(tmp_path, "--duration", "10s", "--format", "xls")
    assert_one_line_error(result, 2, "'xls'", "csv", "parquet")


def test_unwritable_parquet_path_is_a_one_line_error(tmp_path):
    """A Parquet file whose folder cannot be made stops with status 3 and one line naming it."""
    (tmp_path / "blocker").write_text("")
    result = generate(tmp_path, "--duration", "10s", "--out", "blocker/train.parquet")
    assert_one_line_error(result, 3, "blocker/train.parquet")
    assert (tmp_path / "blocker").read_text() == ""


def test_a_schema_column_without_an_arrow_type_fails_loudly(monkeypatch):
    """A column added to common.schema.COLUMNS with no Arrow type here is an error naming it,
    never a Parquet file silently without it."""
    assert arrow.SCHEMA.names == list(schema.COLUMNS)
    monkeypatch.setattr(schema, "COLUMNS", (*schema.COLUMNS, "label"))
    with pytest.raises(LookupError, match="label"):
        arrow._schema()


def test_record_batch_of_hand_made_rows():
    """Hand-made rows convert to the values, nulls and floored times the CSV would show."""
    rows = schema.empty_rows(3)
    rows["ts_ms"] = [1_754_265_600_999, 1_754_265_601_000, 1_754_265_601_500]
    rows["seq"] = [0, 1, 2]
    rows["device"] = [b"host-01", "héte-02".encode(), b"host-01"]
    rows["cpu"] = [1.5, float("nan"), -0.1]
    rows["anomaly"] = [0, 1 + schema.ANOMALY_KINDS.index("dropout"), 0]
    rows["anomaly_id"] = [0, 42, 0]
    seconds = arrow.record_batch(schema.Batch(rows, schema.SECONDS))
    assert seconds.column("timestamp").cast(pa.int64()).to_pylist() == [
        1_754_265_600_000,
        1_754_265_601_000,
        1_754_265_601_000,
    ]
    assert seconds.column("cpu").to_pylist() == [1.5, None, -0.1]
    assert seconds.column("device").to_pylist() == ["host-01", "héte-02", "host-01"]
    assert seconds.column("device").dictionary.to_pylist() == ["host-01", "héte-02"]
    assert seconds.column("anomaly").to_pylist() == [None, "dropout", None]
    assert seconds.column("anomaly_id").to_pylist() == [None, 42, None]
    millis = arrow.record_batch(schema.Batch(rows, schema.MILLISECONDS))
    assert millis.column("timestamp").cast(pa.int64()).to_pylist() == rows["ts_ms"].tolist()
