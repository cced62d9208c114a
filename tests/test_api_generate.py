"""streamsim.generate and streamsim.read_log against the real `python -m producer generate`:
the same rows, in the API's dtypes, from memory, from the CSV and from the Parquet file."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest

import streamsim
from conftest import REPO

SAMPLE_DTYPES = {
    "timestamp": "datetime64[ms, UTC]",
    "cpu": "float64",
    "mem": "float64",
    "disk_io": "float64",
    "net": "float64",
    "device": "category",
    "seq": "int64",
    "anomaly": "category",
    "anomaly_id": "Int64",
    "anomaly_root": "Int64",
    "event": "category",
    "anomaly_metrics": "category",
}
WINDOW_DTYPES = {
    "anomaly_id": "Int64",
    "device": "category",
    "kind": "category",
    "metrics": "str",
    "start": "datetime64[ms, UTC]",
    "end": "datetime64[ms, UTC]",
    "samples": "int64",
    "root": "Int64",
}

# Each: (the API's keywords, the same settings on the command line).
SETTINGS = {
    "mixed fleet, 1 Hz, dense anomalies": (
        dict(duration="1h", devices=3, seed=42, start="2025-08-04", anomaly_rate=10),
        ["--duration", "1h", "--devices", "3", "--seed", "42", "--start", "2025-08-04"]
        + ["--anomaly-rate", "10"],
    ),
    "5 Hz (milliseconds), roles, kinds and durations as mappings": (
        dict(
            duration=timedelta(minutes=10),
            devices=2,
            rate=5,
            seed=7,
            start=datetime(2025, 8, 4, 12, tzinfo=UTC),
            roles={"web": 1, "db": 1},
            anomaly_rate=30,
            anomaly_kinds={"spike": 3, "dropout": 1},
            anomaly_durations={"spike": ("1s", "3s")},
        ),
        ["--duration", "600", "--devices", "2", "--rate", "5", "--seed", "7"]
        + ["--start", "2025-08-04T12:00:00+00:00", "--roles", "web=1,db=1"]
        + ["--anomaly-rate", "30", "--anomaly-kinds", "spike=3,dropout=1"]
        + ["--anomaly-duration", "spike=1s-3s"],
    ),
    "a scenario: an incident with symptoms, planned events": (
        dict(duration="40m", seed=42, start="2025-08-04", scenario="SCENARIO"),
        ["--duration", "40m", "--seed", "42", "--start", "2025-08-04", "--scenario", "SCENARIO"],
    ),
}
SCENARIO = """
name = "small-outage"
[[group]]
role = "db"
count = 1
id = "db-01"
[[group]]
name = "web"
role = "web"
count = 2
[[incident]]
at = "+10m"
root = "db-01"
duration = "5m"
  [[incident.symptom]]
  group = "web"
  kind = "level_shift"
  metric = "cpu"
  delay = "20s"
  stagger = "10s"
[[maintenance]]
at = "+20m"
devices = "web-01"
duration = "3m"
[[deploy]]
at = "+30m"
group = "web"
every = "1m"
duration = "2m"
"""


def settings(name: str, folder: Path) -> tuple[dict, list[str]]:
    """The named settings, a scenario file written to `folder` where they use one."""
    keywords, args = SETTINGS[name]
    scenario = folder / "small-outage.toml"
    scenario.write_text(SCENARIO)
    keywords = {k: scenario if v == "SCENARIO" else v for k, v in keywords.items()}
    return keywords, [str(scenario) if a == "SCENARIO" else a for a in args]


def cli_generate(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m producer generate ARGS`, with no STREAM_* settings leaking in."""
    return subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--no-progress", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def independent_csv(path: Path) -> pd.DataFrame:
    """The CSV read by plain pandas, as text: a check that does not share the API's reader."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def as_text(samples: pd.DataFrame) -> pd.DataFrame:
    """The API's samples written the way the CSV shows them."""
    rate_ms = samples["timestamp"].dt.microsecond.any()
    fmt = "%Y-%m-%d %H:%M:%S.%f" if rate_ms else "%Y-%m-%d %H:%M:%S"
    text = pd.DataFrame(
        {"timestamp": samples["timestamp"].dt.strftime(fmt).str.slice(0, 23 if rate_ms else 19)}
    )
    for metric in ("cpu", "mem", "disk_io", "net"):
        text[metric] = samples[metric].map(lambda v: "" if np.isnan(v) else f"{v:.1f}")
    text["device"] = samples["device"].astype(str)
    text["seq"] = samples["seq"].astype(str)
    for name in ("anomaly", "anomaly_id", "anomaly_root", "event", "anomaly_metrics"):
        text[name] = samples[name].astype("string").fillna("").astype(str)
    return text


@pytest.mark.parametrize("name", list(SETTINGS))
def test_generate_equals_the_cli_files(tmp_path: Path, name: str):
    """For the same settings, generate() holds row for row the CLI's CSV and Parquet rows and
    its windows, read back by read_log with the same dtypes, and the CSV's text itself."""
    keywords, args = settings(name, tmp_path)
    for out in ("train.csv", "train.parquet"):
        done = cli_generate(tmp_path, *args, "--out", out)
        assert done.returncode == 0, done.stderr
    dataset = streamsim.generate(**keywords)
    samples, windows = dataset
    assert samples.dtypes.astype(str).to_dict() == SAMPLE_DTYPES
    assert windows.dtypes.astype(str).to_dict() == WINDOW_DTYPES
    assert len(samples) > 1000 and len(windows) > 0
    for out in ("train.csv", "train.parquet"):
        log = streamsim.read_log(tmp_path / out)
        pd.testing.assert_frame_equal(log.samples, samples, check_exact=True)
        pd.testing.assert_frame_equal(log.windows, windows, check_exact=True)
        assert log.gaps.empty
    pd.testing.assert_frame_equal(as_text(samples), independent_csv(tmp_path / "train.csv"))
    raw = pd.read_parquet(tmp_path / "train.parquet")
    assert (raw["timestamp"] == samples["timestamp"]).all()
    assert raw["anomaly_id"].fillna(0).astype("int64").eq(samples["anomaly_id"].fillna(0)).all()
    ids = independent_csv(tmp_path / "train.windows.csv")["anomaly_id"].astype("int64")
    assert (ids == windows["anomaly_id"]).all()


def test_the_settings_cover_what_they_should(tmp_path: Path):
    """The settings above reach milliseconds, missing values, events and incident roots."""
    fast = streamsim.generate(**settings(list(SETTINGS)[1], tmp_path)[0])
    assert fast.samples["timestamp"].dt.microsecond.any()
    assert fast.samples["cpu"].isna().any()
    assert list(fast.samples["device"].cat.categories) == ["host-01", "host-02"]
    samples, windows = streamsim.generate(**settings(list(SETTINGS)[2], tmp_path)[0])
    assert list(samples["device"].cat.categories) == ["db-01", "web-01", "web-02"]
    assert set(samples["event"].dropna()) == {"maintenance", "deploy"}
    roots = samples.dropna(subset=["anomaly_root"])
    assert (roots["anomaly_root"] != roots["anomaly_id"]).any()  # symptoms of a root
    assert {"maintenance", "deploy", "incident", "level_shift"} <= set(windows["kind"])


def test_generate_keeps_what_it_was_given():
    """The seed drawn when none is given comes back, and gives the same samples again."""
    first = streamsim.generate("2m", devices=2, start="2025-08-04")
    again = streamsim.generate("2m", devices=2, start="2025-08-04", seed=first.seed)
    pd.testing.assert_frame_equal(first.samples, again.samples, check_exact=True)
    assert first.start == pd.Timestamp("2025-08-04", tz="UTC")
    assert (first.rate, first.devices) == (1.0, 2)
    recent = streamsim.generate(60, seed=1)
    ends = recent.samples["timestamp"].max()
    assert pd.Timestamp.now(tz="UTC") - ends < pd.Timedelta(minutes=1)


@pytest.mark.parametrize(
    ("keywords", "args"),
    [
        (dict(duration="1h", rate=0), ["--duration", "1h", "--rate", "0"]),
        (dict(duration="soon"), ["--duration", "soon"]),
        (dict(duration="1h", start="yesterday"), ["--duration", "1h", "--start", "yesterday"]),
        (
            dict(duration="1h", anomaly_kinds="spike=x"),
            ["--duration", "1h", "--anomaly-kinds", "spike=x"],
        ),
        (dict(duration="1h", roles={"dbx": 1}), ["--duration", "1h", "--roles", "dbx=1"]),
        (
            dict(duration="1h", devices=3, scenario=REPO / "scenarios" / "db-outage.toml"),
            ["--duration", "1h", "--devices", "3"]
            + ["--scenario", str(REPO / "scenarios" / "db-outage.toml")],
        ),
    ],
)
def test_generate_refuses_what_the_cli_refuses_with_its_message(tmp_path, keywords, args):
    """A bad value raises ValueError whose text is the line the CLI prints after 'error: '."""
    with pytest.raises(ValueError) as raised:
        streamsim.generate(**keywords)
    done = cli_generate(tmp_path, *args, "--out", "x.csv")
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line == f"producer: error: {raised.value}"


def test_generate_reads_no_stream_variables(monkeypatch):
    """STREAM_* settings of the environment do not change what a call asked for."""
    monkeypatch.setenv("STREAM_SEED", "5")
    monkeypatch.setenv("STREAM_DEVICES", "4")
    monkeypatch.setenv("STREAM_RATE", "0")
    dataset = streamsim.generate("1m", start="2025-08-04", seed=9)
    assert dataset.devices == 1 and dataset.seed == 9


def test_read_log_reads_rotated_parts_mixed_timestamps_and_gaps(tmp_path: Path):
    """A logger's log: the rotated parts oldest first, then the live file; timestamps of both
    precisions (a rate change); quoted ids; a row still being written left out; the gaps and
    windows files typed, an empty field a null."""
    header = ",".join(SAMPLE_DTYPES)
    (tmp_path / "stream_log-000001.csv").write_text(
        f"{header}\n2025-08-04 00:00:00,1.0,2.0,3.0,4.0,host-01,0,,,,,\n"
        '2025-08-04 00:00:00,,2.0,3.0,4.0,"rack 4, ""top""",0,spike,7,7,,cpu\n'
    )
    (tmp_path / "stream_log.csv").write_text(
        f"{header}\n2025-08-04 00:00:01.500,1.5,2.5,3.5,4.5,host-01,1,,,,deploy,\n"
        "2025-08-04 00:00:02.000,1.5,2.5,3.5,4.5,NA,5,,,,,\n"
        "2025-08-04 00:00:02.500,1.5,2.5"
    )
    (tmp_path / "stream_log.gaps.csv").write_text(
        "device,first_missing_seq,last_missing_seq,after,before,reason\n"
        "host-01,2,4,2025-08-04 00:00:01.500,2025-08-04 00:00:03.500,lost\n"
    )
    (tmp_path / "stream_log.windows.csv").write_text(
        "anomaly_id,device,kind,metrics,start,end,samples,root\n"
        '7,"rack 4, ""top""",spike,cpu,2025-08-04 00:00:00,2025-08-04 00:00:00,1,7\n'
        "6222959272554985022,host-01,deploy,,2025-08-04 00:00:01.500,2025-08-04 00:00:01.500,1,\n"
    )
    samples, windows, gaps = streamsim.read_log(tmp_path / "stream_log.csv")
    assert samples.dtypes.astype(str).to_dict() == SAMPLE_DTYPES
    assert list(samples["seq"]) == [0, 0, 1, 5]
    assert list(samples["device"]) == ["host-01", 'rack 4, "top"', "host-01", "NA"]
    assert list(samples["timestamp"]) == [
        pd.Timestamp(t, tz="UTC")
        for t in ("2025-08-04", "2025-08-04", "2025-08-04 00:00:01.5", "2025-08-04 00:00:02")
    ]
    assert np.isnan(samples["cpu"][1]) and samples["anomaly_id"].isna()[0]
    assert samples["anomaly"][1] == "spike" and samples["event"][2] == "deploy"
    assert windows["anomaly_id"].tolist() == [7, 6222959272554985022]
    assert windows["root"].isna().tolist() == [False, True]
    assert windows["metrics"].isna().tolist() == [False, True]
    assert gaps.dtypes.astype(str).to_dict() == {
        "device": "category",
        "first_missing_seq": "int64",
        "last_missing_seq": "int64",
        "after": "datetime64[ms, UTC]",
        "before": "datetime64[ms, UTC]",
        "reason": "category",
    }
    assert gaps["before"][0] == pd.Timestamp("2025-08-04 00:00:03.5", tz="UTC")
    pattern = streamsim.read_log(str(tmp_path / "stream_log*.csv"))
    pd.testing.assert_frame_equal(pattern.samples, samples)
    assert [p.name for p in pattern.files] == ["stream_log-000001.csv", "stream_log.csv"]


def test_read_log_refuses_what_is_not_a_log(tmp_path: Path):
    """One line naming the file: a missing one, a foreign header, a bad row, an unknown label."""
    with pytest.raises(FileNotFoundError, match="no such file"):
        streamsim.read_log(tmp_path / "none.csv")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        streamsim.read_log(str(tmp_path / "none*.csv"))
    header = ",".join(SAMPLE_DTYPES)
    cases = {
        "foreign.csv": ("timestamp,value\n2025-08-04 00:00:00,1\n", "has header 'timestamp,value'"),
        "short.csv": (f"{header}\n2025-08-04 00:00:00,1.0,host-01\n", "Expected 12 columns"),
        "label.csv": (
            f"{header}\n2025-08-04 00:00:00,1,2,3,4,h,0,spik,1,1,,cpu\n",
            "unknown anomaly kind 'spik'",
        ),
        "time.csv": (f"{header}\nlater,1,2,3,4,h,0,,,,,\n", "timestamp"),
    }
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=words) as raised:
            streamsim.read_log(tmp_path / name)
        assert str(raised.value).startswith(str(tmp_path / name))
        assert "\n" not in str(raised.value)


def test_generate_defaults_are_the_clis():
    """What None leaves to the CLI: the defaults `python -m producer generate --help` shows."""
    from streamsim._isolated import project

    command = project("producer.cli").generate
    defaults = {p.name: p.default for p in command.params if isinstance(p, click.Option)}
    assert defaults["rate"] == 1.0 and defaults["devices"] == 1
    dataset = streamsim.generate("10s", seed=3, start="2025-08-04")
    assert (dataset.rate, dataset.devices, len(dataset.samples)) == (1.0, 1, 10)
