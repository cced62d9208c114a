"""Replay through the real processes: faithful values and time axis, benchmark labels, awkward
device ids, and every kind of bad input refused (--on-bad-row error) or skipped and accounted
for (--on-bad-row skip)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_faults import metrics, verify
from websockets.sync.client import connect

from common import schema
from common.errors import InputError
from conftest import REPO, Pipeline, wait_until
from producer.sources import recording
from producer.sources.replay import ReplaySource
from producer.sources.series import Series

CSV = "data/stream_log.csv"
NAB_START = pd.Timestamp("2014-02-14 14:30:00")


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def stamp(minutes: float) -> str:
    return str(NAB_START + pd.Timedelta(minutes=minutes))


def logged(path: Path) -> list[dict[str, str]]:
    """The logger's CSV rows, parsed as CSV (ids with commas or quotes are quoted)."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def producer_exits(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """A replaying producer on endpoints of its own that is expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "producer", "--source", "replay"]
        + ["--zmq-pub", f"ipc://{cwd}/pub.sock", "--zmq-catchup", f"ipc://{cwd}/catchup.sock"]
        + ["--zmq-control", f"ipc://{cwd}/control.sock", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


HEADER = "timestamp,cpu,mem,disk_io,net,device,anomaly,anomaly_id,event"


def row(minutes: float, cpu="1.5", mem="2.5", disk="3.5", net="4.5", device="a", label=",,"):
    return f"{stamp(minutes)},{cpu},{mem},{disk},{net},{device},{label}"


# (what is wrong, the bad row that follows a good one at minute 0, what the error says)
BAD_ROWS = [
    ("cpu over 100 %", row(5, cpu="150"), "cpu '150' is outside its domain [0, 100]"),
    ("negative rate", row(5, net="-3"), "net '-3' is outside its domain >= 0"),
    ("not a number", row(5, cpu="abc"), "cpu 'abc' is not a number"),
    ("infinite", row(5, disk="inf"), "disk_io 'inf' is not finite"),
    ("unreadable time", row(5).replace(stamp(5), "yesterday"), "timestamp 'yesterday' is not"),
    ("repeated time", row(0), f"timestamp '{stamp(0)}' repeats '{stamp(0)}' of an earlier row"),
    ("time going back", row(-5), f"timestamp '{stamp(-5)}' goes back from '{stamp(0)}'"),
    ("edge space in id", row(5, device=" a"), "device id ' a' starts or ends with a space"),
    ("65-byte id", row(5, device="é" * 32 + "x"), "is 65 bytes of UTF-8, at most 64"),
    ("control char in id", row(5, device="a\tb"), "holds a control or format character"),
    ("unquoted comma in id", row(5, device="rack 4, top"), "10 fields, expected 9 (quote"),
    ("unknown anomaly", row(5, label="spikes,7,"), "anomaly 'spikes' is not one of spike, dip"),
    ("negative anomaly_id", row(5, label="spike,-1,"), "anomaly_id '-1' is not a non-negative"),
    ("unknown event", row(5, label=",,party"), "event 'party' is not one of maintenance"),
    ("label without id", row(5, label="spike,,"), "anomaly 'spike' with anomaly_id ''"),
]


@pytest.mark.parametrize("case, bad, message", BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_a_bad_row_stops_the_producer_naming_file_line_and_text(tmp_path, case, bad, message):
    """By default (--on-bad-row error) the producer refuses to start with one line naming the
    file, the line of the bad row and its text, and exit status 2."""
    write(tmp_path / "in.csv", HEADER, row(0), bad, row(10))
    result = producer_exits(tmp_path, "--replay-file", "in.csv")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("producer: error: replay file in.csv line 3: "), result.stderr
    assert message in result.stderr


WHOLE_FILE = [
    ("empty", [], "replay file in.csv is empty"),
    ("header only", [HEADER], "replay file in.csv has a header but no rows"),
    ("blank lines only", [HEADER, "", ""], "replay file in.csv has a header but no rows"),
    (
        "no timestamp",
        ["time,value", "1,2"],
        "replay file in.csv has no 'timestamp' column (its header: time,value)",
    ),
    (
        "no metric",
        ["timestamp,v", f"{stamp(0)},1"],
        "replay file in.csv needs a column cpu, mem, disk_io, net or 'value'",
    ),
]


@pytest.mark.parametrize("case, lines, message", WHOLE_FILE, ids=[c[0] for c in WHOLE_FILE])
def test_an_unusable_file_stops_the_producer(tmp_path, case, lines, message):
    """An empty file, a header without rows, or a file without a usable column is refused with
    one line naming the file, exit status 2, whatever --on-bad-row says."""
    write(tmp_path / "in.csv", *lines)
    for policy in ("error", "skip"):
        result = producer_exits(tmp_path, "--replay-file", "in.csv", "--on-bad-row", policy)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"producer: error: {message}"), result.stderr
        assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "label, message",
    [
        ("spike,7,cpu|gpu", "anomaly_metrics 'cpu|gpu' is not metrics of cpu, mem, disk_io, net"),
        (",,mem", "anomaly_metrics 'mem' on a sample without an anomaly"),
    ],
)
def test_a_bad_anomaly_metrics_field_stops_the_producer(tmp_path, label, message):
    """A log's anomaly_metrics must name metrics, joined by |, on an anomaly's samples only:
    anything else is a bad row, named with its line and text."""
    header = "timestamp,cpu,mem,disk_io,net,device,anomaly,anomaly_id,anomaly_metrics"
    write(tmp_path / "in.csv", header, row(0, label="spike,7,cpu|net"), row(5, label=label))
    result = producer_exits(tmp_path, "--replay-file", "in.csv")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("producer: error: replay file in.csv line 3: "), result.stderr
    assert message in result.stderr


def test_a_file_of_only_bad_rows_is_refused_even_when_skipping(tmp_path):
    """Skipping every row would replay nothing: the producer says so, naming the first."""
    write(tmp_path / "in.csv", HEADER, row(0, cpu="-1"), row(5, cpu="x"))
    result = producer_exits(tmp_path, "--replay-file", "in.csv", "--on-bad-row", "skip")
    assert result.returncode == 2
    assert "none of its 2 rows is a valid sample (line 2: cpu '-1' is outside" in result.stderr


def test_unusable_labels_stop_the_producer(tmp_path):
    """A labels file that is not JSON, or has no windows for the replayed file, is refused
    with one line naming it."""
    write(tmp_path / "nab.csv", "timestamp,value", f"{stamp(0)},0.5")
    write(tmp_path / "bad.json", "{not json")
    write(tmp_path / "other.json", json.dumps({"a/x.csv": [], "a/y.csv": []}))
    for labels, message in [
        ("bad.json", "labels file bad.json is not JSON: "),
        ("other.json", "labels file other.json has no windows for nab.csv (it has: a/x.csv, a/y"),
    ]:
        result = producer_exits(tmp_path, "--replay-file", "nab.csv", "--replay-labels", labels)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def skip_file(path: Path) -> tuple[set[tuple[str, int]], int]:
    """Two interleaved devices with every kind of bad row inside their series, and rows
    whose device id is not valid; returns the (device, seq) of the bad rows that have a
    valid device id, and how many rows have none."""
    bad_a = {1: {"cpu": "150"}, 3: {"net": "-3"}, 5: {"cpu": "abc"}, 7: {"mem": "inf"}}
    bad_a |= {9: {"time": "yesterday"}, 10: {"mem": "-0.5"}}  # two in a row
    bad_b = {1: {"time": stamp(1)}, 3: {"time": stamp(10)}, 5: {"label": "spikes,5,"}}
    bad_b |= {7: {"label": "spike,-1,"}, 9: {"label": ",,party"}, 11: {"label": "spike,,"}}
    lines = [HEADER]
    for k in range(14):
        for device, bad, offset in (("a", bad_a, 0), ("b", bad_b, 1)):
            fault = bad.get(k, {})
            fields = {f: v for f, v in fault.items() if f != "time"}
            text = row(5 * k + offset, device=device, **fields)
            if "time" in fault:
                text = text.replace(stamp(5 * k + offset), fault["time"], 1)
            lines.append(text)
        if k == 4:
            lines += [row(5 * k + 2, device=" padded"), row(5 * k + 2, device="é" * 33)]
            lines += [row(5 * k + 3, device="rack 4, top"), row(5 * k + 3, device="")]
    write(path, *lines)
    expected = {("a", s) for s in bad_a} | {("b", s) for s in bad_b}
    return expected, 4


def test_skipped_rows_are_recorded_as_gaps_and_counted(pipeline: Pipeline):
    """With --on-bad-row skip every bad row keeps its seq but is not published: the logger's
    gaps file records exactly those seqs as invalid_input, verify answers OK, the producer
    counts them (those without a valid device id too) on /metrics and logs them once."""
    expected, unattributed = skip_file(pipeline.cwd / "in.csv")
    pipeline.logger("--flush-interval", "0.1")
    producer = pipeline.producer(
        "--source", "replay", "--replay-file", "in.csv", "--speed", "3000",
        "--on-bad-row", "skip", "--metrics-port", "any",
    )  # fmt: skip
    path = pipeline.cwd / CSV
    wait_until(lambda: len(logged(path)) == 28 - len(expected), timeout=20)
    gaps_path = pipeline.cwd / "data" / "stream_log.gaps.csv"
    wait_until(lambda: len(logged(gaps_path)) >= 11, timeout=10)
    gaps = logged(gaps_path)
    assert {g["reason"] for g in gaps} == {"invalid_input"}
    recorded = {
        (g["device"], seq)
        for g in gaps
        for seq in range(int(g["first_missing_seq"]), int(g["last_missing_seq"]) + 1)
    }
    assert recorded == expected
    result = verify(pipeline.cwd, CSV)
    assert result.returncode == 0, result.stdout
    assert f"{len(expected)} invalid_input" in result.stdout
    figures = metrics(producer)
    assert figures["stream_invalid_rows_total"] == len(expected) + unattributed
    assert figures["stream_samples_published_total"] == 28 - len(expected)
    summary = producer.wait_for(r"skipping (\d+) row\(s\) that are not valid samples")
    assert int(summary[1]) == len(expected) + unattributed
    assert "line 4: cpu '150' is outside its domain [0, 100]" in summary.string


NAB_VALUES = ["0.132", "0.134", "0.1", "12.5", "0.0", "", "3.25", "0.131"]


def nab_file(path: Path) -> Path:
    """A NAB data file: 5-minute spacing, values with up to 3 decimals, one of them missing."""
    lines = ["timestamp,value"]
    lines += [f"{stamp(5 * k)},{v}" for k, v in enumerate(NAB_VALUES)]
    return write(path, *lines)


def shown(value: str) -> str:
    """A NAB value as the replay shows it: with the file's 3 decimals."""
    return f"{float(value):.3f}" if value else ""


def test_replay_keeps_precision_and_time_axis_in_csv_and_json(pipeline: Pipeline):
    """A NAB file replayed at --speed 30000 from --start shows its values as the file has them
    (0.132) and its rows 5 simulated minutes apart, from --start on, in CSV and JSON alike."""
    nab_file(pipeline.cwd / "nab.csv")
    pipeline.logger("--flush-interval", "0.1")
    pipeline.broadcaster()
    with connect(pipeline.ws_url + "/", open_timeout=10) as ws:
        pipeline.producer(
            "--source", "replay", "--replay-file", "nab.csv", "--speed", "30000",
            "--start", "2030-01-01T00:00:00",
        )  # fmt: skip
        frames = [json.loads(ws.recv(timeout=20)) for _ in NAB_VALUES]
    path = pipeline.cwd / CSV
    wait_until(lambda: len(logged(path)) == len(NAB_VALUES), timeout=10)
    expected_times = [
        str(pd.Timestamp("2030-01-01") + pd.Timedelta(minutes=5 * k))
        for k in range(len(NAB_VALUES))
    ]
    rows = logged(path)
    assert [r["timestamp"] for r in rows] == expected_times
    assert [r["cpu"] for r in rows] == [shown(v) for v in NAB_VALUES]
    assert [f["timestamp"] for f in frames] == expected_times
    assert [f["cpu"] for f in frames] == [float(v) if v else None for v in NAB_VALUES]
    raw = (pipeline.cwd / CSV).read_text().splitlines()[1]
    assert raw.startswith("2030-01-01 00:00:00,0.132,,,,host-01,0,")


def test_replay_without_start_begins_now_and_keeps_spacing(pipeline: Pipeline):
    """Without --start the first row is stamped with the moment the replay begins, and the
    rows keep the file's 5-minute spacing whatever --speed is."""
    nab_file(pipeline.cwd / "nab.csv")
    pipeline.logger("--flush-interval", "0.1")
    before = pd.Timestamp.now("UTC").tz_localize(None)
    pipeline.producer("--source", "replay", "--replay-file", "nab.csv", "--speed", "30000")
    path = pipeline.cwd / CSV
    wait_until(lambda: len(logged(path)) == len(NAB_VALUES), timeout=15)
    times = pd.to_datetime([r["timestamp"] for r in logged(path)])
    assert (times.diff()[1:] == pd.Timedelta(minutes=5)).all()
    assert before - pd.Timedelta(seconds=1) <= times[0] <= before + pd.Timedelta(seconds=10)


def test_replay_labels_mark_exactly_the_samples_inside_the_windows(pipeline: Pipeline):
    """--replay-labels with NAB's combined_windows.json labels the samples inside each window
    (inclusive) as anomaly `window`, one id per window, and the logger's windows file lists
    them with the replayed metric."""
    nab_file(pipeline.cwd / "nab.csv")
    windows = {
        "realKnownCause/nab.csv": [
            [f"{stamp(5)}.000000", f"{stamp(10)}.000000"],
            [f"{stamp(28)}.000000", f"{stamp(30)}.000000"],
        ],
        "realKnownCause/other.csv": [[f"{stamp(0)}.000000", f"{stamp(40)}.000000"]],
    }
    write(pipeline.cwd / "combined_windows.json", json.dumps(windows))
    logger = pipeline.logger("--flush-interval", "0.1")
    pipeline.producer(
        "--source", "replay", "--replay-file", "nab.csv", "--speed", "30000",
        "--replay-labels", "combined_windows.json", "--replay-metric", "net",
    )  # fmt: skip
    path = pipeline.cwd / CSV
    wait_until(lambda: len(logged(path)) == len(NAB_VALUES), timeout=15)
    assert logger.stop()[0] == 0
    rows = logged(path)
    assert [(r["anomaly"], r["anomaly_id"]) for r in rows] == [
        ("", ""), ("window", "1"), ("window", "1"), ("", ""),
        ("", ""), ("", ""), ("window", "2"), ("", ""),
    ]  # fmt: skip
    listed = logged(pipeline.cwd / "data" / "stream_log.windows.csv")
    assert [(w["anomaly_id"], w["kind"], w["metrics"], w["samples"]) for w in listed] == [
        ("1", "window", "net", "2"),
        ("2", "window", "net", "1"),
    ]


AWKWARD_IDS = ['rack 4, "top"', "温度センサー", "é" * 32, "host-01"]


def test_awkward_device_ids_round_trip_through_csv_and_json(pipeline: Pipeline):
    """Valid ids holding a comma and quotes, non-ASCII text, or 64 bytes of UTF-8 replay
    unchanged: the logger's CSV (quoted where needed) verifies OK and holds the same ids,
    values and seqs as the broadcaster's JSON."""
    lines = ["timestamp,cpu,mem,disk_io,net,device"]
    for k in range(5):
        for i, device in enumerate(AWKWARD_IDS):
            lines.append(f"{stamp(k + i / 10)},{k}.5,{i}.25,1,2,{schema.csv_field(device)}")
    write(pipeline.cwd / "in.csv", *lines)
    pipeline.logger("--flush-interval", "0.1")
    pipeline.broadcaster()
    count = 5 * len(AWKWARD_IDS)
    with connect(pipeline.ws_url + "/", open_timeout=10) as ws:
        pipeline.producer("--source", "replay", "--replay-file", "in.csv", "--speed", "600")
        frames = [json.loads(ws.recv(timeout=20)) for _ in range(count)]
    path = pipeline.cwd / CSV
    wait_until(lambda: len(logged(path)) == count, timeout=10)
    rows = logged(path)
    assert {r["device"] for r in rows} == set(AWKWARD_IDS)
    in_csv = [(r["device"], int(r["seq"]), float(r["cpu"]), float(r["mem"])) for r in rows]
    in_json = [(f["device"], f["seq"], f["cpu"], f["mem"]) for f in frames]
    assert in_csv == in_json
    assert sorted(in_csv) == sorted(
        (d, k, k + 0.5, i + 0.25) for k in range(5) for i, d in enumerate(AWKWARD_IDS)
    )
    result = verify(pipeline.cwd, CSV)
    assert result.returncode == 0, result.stdout
    assert "4 device(s)" in result.stdout


def test_our_own_log_replays_byte_identical_values_and_labels(pipeline: Pipeline):
    """A log of ours (one decimal, labels) replays with the very same text in every value and
    label field; only timestamps (rebased) and seqs (counted afresh) may differ."""
    subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--out", "source.csv", "--no-progress"]
        + ["--duration", "30s", "--devices", "2", "--seed", "4", "--anomaly-rate", "60"]
        + ["--start", "2025-08-04T00:00:00"],
        cwd=pipeline.cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        timeout=120,
    )
    pipeline.logger("--flush-interval", "0.1")
    pipeline.producer("--source", "replay", "--replay-file", "source.csv", "--speed", "30")
    path = pipeline.cwd / CSV
    original = logged(pipeline.cwd / "source.csv")
    wait_until(lambda: len(logged(path)) == len(original), timeout=15)
    labels = schema.COLUMNS[schema.COLUMNS.index("anomaly") :]  # anomaly_metrics included
    fields = ["cpu", "mem", "disk_io", "net", "device", *labels]
    replayed = logged(path)
    assert [[r[f] for f in fields] for r in replayed] == [[r[f] for f in fields] for r in original]
    assert any(r["anomaly"] for r in replayed)
    assert all(bool(r["anomaly_metrics"]) == bool(r["anomaly"]) for r in replayed)
    gaps = pd.to_datetime([r["timestamp"] for r in replayed]).diff()[1:]
    assert set(gaps) <= {pd.Timedelta(0), pd.Timedelta(seconds=1)}


def test_replayed_rows_are_paced_by_speed(pipeline: Pipeline):
    """The wall time between rows is their file spacing / --speed: 8 rows 5 minutes apart at
    --speed 600 take about 3.5 s."""
    nab_file(pipeline.cwd / "nab.csv")
    pipeline.logger("--flush-interval", "0.05")
    pipeline.producer("--source", "replay", "--replay-file", "nab.csv", "--speed", "600")
    path = pipeline.cwd / CSV
    wait_until(lambda: len(logged(path)) >= 1, timeout=10)
    first = time.monotonic()
    wait_until(lambda: len(logged(path)) == len(NAB_VALUES), timeout=15, interval=0.02)
    assert 2.5 < time.monotonic() - first < 6.0


class TestRecording:
    """How a replay file is read, without processes (the rules above apply them end to end)."""

    def test_decimals_are_the_most_the_text_shows(self, tmp_path):
        """Decimals count the text, scientific notation included; whole numbers show none; a
        file without any number keeps the default of one."""
        for values, decimals in [(["12", "3"], 0), (["1.5e-3", "2.25"], 4), (["", "nan"], 1)]:
            lines = [f"{stamp(k)},{v}" for k, v in enumerate(values)]
            path = write(tmp_path / "in.csv", "timestamp,value", *lines)
            assert recording.load(path).decimals == decimals

    def test_timestamp_precision_follows_each_devices_spacing(self, tmp_path):
        """Milliseconds when a device's rows are under a second apart; seconds when only rows
        of different devices are (two devices 1 s apart each, offset by half a second)."""
        close = write(
            tmp_path / "close.csv", "timestamp,value", "2025-01-01 00:00:00.000,1",
            "2025-01-01 00:00:00.500,2",
        )  # fmt: skip
        assert recording.load(close).precision == schema.MILLISECONDS
        lines = [
            f"2025-01-01 00:00:0{s}.{h}00,1,{d}" for s in range(3) for h, d in ((0, "a"), (5, "b"))
        ]
        apart = write(tmp_path / "apart.csv", "timestamp,cpu,device", *lines)
        assert recording.load(apart).precision == schema.SECONDS

    def test_devices_may_interleave_in_any_order(self, tmp_path):
        """Rows of different devices need not be in time order across devices: they are
        replayed in time order, each device's seq counting its rows in file order."""
        path = write(
            tmp_path / "in.csv", "timestamp,cpu,device",
            f"{stamp(10)},1,b", f"{stamp(0)},2,a", f"{stamp(20)},3,b", f"{stamp(5)},4,a",
        )  # fmt: skip
        played = recording.load(path)
        assert played.line.tolist() == [3, 5, 2, 4]
        assert played.seq_offset.tolist() == [0, 1, 0, 1]
        assert played.values[:, 0].tolist() == [2.0, 4.0, 1.0, 3.0]

    def test_lines_are_counted_in_the_file(self, tmp_path):
        """A byte-order mark and blank lines do not shift the line an error names."""
        path = tmp_path / "in.csv"
        text = f"\ufefftimestamp,value\n\n{stamp(0)},1\n\n{stamp(5)},x\n"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=r"line 5: value \(cpu\) 'x' is not a number"):
            recording.load(path)

    def test_time_zones_and_resaved_ids_are_understood(self, tmp_path):
        """A timestamp with an offset is converted to UTC; an anomaly_id re-saved by pandas as
        `12.0` is the integer 12."""
        path = write(
            tmp_path / "in.csv", "timestamp,cpu,anomaly,anomaly_id",
            "2014-02-14T14:30:00+01:00,1,spike,12.0", "2014-02-14T14:35:00+01:00,1,,",
        )  # fmt: skip
        played = recording.load(path)
        assert played.first_ms == pd.Timestamp("2014-02-14 13:30:00").value // 1_000_000
        assert played.anomaly_id.tolist() == [12, 0]

    def test_skipped_rows_keep_their_seq_slot(self, tmp_path):
        """With skip, a bad row stays in its device's seq count (refused, never published) and
        a row too wide to know its device is kept without one."""
        path = write(
            tmp_path / "in.csv", "timestamp,cpu,device",
            f"{stamp(0)},1,a", f"{stamp(5)},150,a", f"{stamp(7)},1,x,y", f"{stamp(10)},1,a",
        )  # fmt: skip
        played = recording.load(path, on_bad_row="skip")
        by_line = {
            int(line): (bool(refused), int(device), int(seq))
            for line, refused, device, seq in zip(
                played.line, played.refused, played.device_index, played.seq_offset, strict=True
            )
        }
        assert {line: by_line[line][:2] for line in by_line} == {
            2: (False, 0), 3: (True, 0), 4: (True, -1), 5: (False, 0),
        }  # fmt: skip
        assert [by_line[line][2] for line in (2, 3, 5)] == [0, 1, 2]
        assert played.problems == [
            "line 3: cpu '150' is outside its domain [0, 100]",
            "line 4: 4 fields, expected 3 (quote a field that holds a comma)",
        ]

    def test_a_loop_continues_the_time_axis_and_each_devices_seq(self, tmp_path):
        """Round two of a looped replay is stamped one file span (plus one step) later, its
        seqs follow round one's per device, and a refused row is refused again under its new
        seq."""
        path = write(
            tmp_path / "in.csv", "timestamp,cpu,device",
            f"{stamp(0)},1,a", f"{stamp(1)},1,b", f"{stamp(5)},150,a", f"{stamp(10)},2,a",
        )  # fmt: skip
        played = recording.load(path, on_bad_row="skip")
        origin = 1_900_000_000_000
        series = Series(0, 2, 1.0, origin, 0, seq_base=100, speed=60.0, source="replay")
        refused: list[tuple[str | None, int | None]] = []
        source = ReplaySource(played, series, loop=True, refuse=lambda d, s: refused.append((d, s)))
        rows = np.concatenate([b.rows for b in source.take(2 * 15 * 60_000 / 60 - 1)])
        minute = 60_000
        assert [(schema.device_name(r["device"]), int(r["seq"]), int(r["ts_ms"] - origin) // minute)
                for r in rows] == [
            ("a", 100, 0), ("b", 100, 1), ("a", 102, 10),
            ("a", 103, 15), ("b", 101, 16), ("a", 105, 25),
        ]  # fmt: skip
        assert refused == [("a", 101), ("a", 104)]

    def test_the_first_valid_sample_is_time_zero(self, tmp_path):
        """A skipped row that goes back before every other (a typo in a year) does not move
        the start of the replay: time 0 is the first valid sample."""
        path = write(
            tmp_path / "in.csv", "timestamp,cpu",
            f"{stamp(0)},1", f"{stamp(5)},1", str(NAB_START - pd.Timedelta(days=365)) + ",1",
        )  # fmt: skip
        played = recording.load(path, on_bad_row="skip")
        assert played.first_ms == NAB_START.value // 1_000_000
        assert played.offset_ms[~played.refused].tolist() == [0, 5 * 60_000]
