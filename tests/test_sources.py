"""Reproducibility, backfill, replay and the live source, through the real processes."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from common.schema import CSV_HEADER
from conftest import REPO, Pipeline, wait_until

START = "2025-08-04T00:00:00"


def generate(cwd, out: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--out", out, "--no-progress", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def series_state(pipeline: Pipeline) -> str:
    """The producer's saved series (rewritten only when it starts a new one)."""
    return (pipeline.cwd / "data" / "producer_state.json").read_text()


class TestBackfill:
    def test_same_seed_gives_byte_identical_files(self, tmp_path):
        """The same seed and settings give byte-identical logs and windows, another seed not."""
        args = ["--duration", "2h", "--devices", "3", "--seed", "5", "--start", START]
        generate(tmp_path, "a.csv", *args)
        generate(tmp_path, "b.csv", *args)
        assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
        assert (tmp_path / "a.windows.csv").read_bytes() == (
            tmp_path / "b.windows.csv"
        ).read_bytes()
        generate(tmp_path, "c.csv", *args[:-3], "6", "--start", START)
        assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()

    def test_output_reads_with_pandas_and_windows_match_labels(self, tmp_path):
        """A 6 h backfill reads with pandas, has every sample, and its windows file agrees with
        the labelled rows event by event."""
        result = generate(
            tmp_path,
            "train.csv",
            "--duration",
            "6h",
            "--devices",
            "2",
            "--seed",
            "1",
            "--start",
            START,
            "--anomaly-rate",
            "10",
        )
        assert "samples/s" in result.stderr
        frame = pd.read_csv(tmp_path / "train.csv", parse_dates=["timestamp"])
        assert len(frame) == 6 * 3600 * 2
        assert frame["timestamp"].iloc[0] == pd.Timestamp(START)
        windows = pd.read_csv(tmp_path / "train.windows.csv", parse_dates=["start", "end"])
        labelled = frame[frame["anomaly_id"].notna()]
        per_event = labelled.groupby("anomaly_id").agg(
            start=("timestamp", "min"), end=("timestamp", "max"), n=("seq", "size")
        )
        merged = windows.groupby("anomaly_id").agg(
            start=("start", "min"), end=("end", "max"), n=("samples", "sum")
        )
        assert len(merged) >= 60
        per_event.index = per_event.index.astype("int64")
        pd.testing.assert_frame_equal(
            per_event.sort_index(), merged.sort_index(), check_dtype=False
        )


class TestLiveAgreesWithBackfill:
    @pytest.mark.slow
    def test_live_log_equals_backfill_also_across_a_producer_restart(self, pipeline: Pipeline):
        """The same seed, settings and span give the same rows live and in a backfill."""
        args = ["--rate", "5", "--devices", "2", "--seed", "9", "--start", START]
        producer = pipeline.producer(*args, "--anomaly-rate", "30")
        pipeline.logger("--flush-interval", "0.1")
        path = pipeline.cwd / "data" / "stream_log.csv"
        wait_until(lambda: len(lines(path)) > 20, timeout=10)
        saved = series_state(pipeline)
        producer.kill()
        time.sleep(1.5)  # the scenario: the producer stays down 1.5 s, its ticks never produced
        pipeline.producer(*args, "--anomaly-rate", "30")
        assert series_state(pipeline) == saved  # it continued the saved series, not a new one
        wait_until(lambda: len(lines(path)) > 60, timeout=10)
        live = lines(path)
        assert live[0] == CSV_HEADER
        last_seq = max(int(line.split(",")[6]) for line in live[1:])
        generate(
            pipeline.cwd,
            "backfill.csv",
            *args,
            "--anomaly-rate",
            "30",
            "--duration",
            f"{(last_seq + 1) / 5}s",
        )
        backfill = lines(pipeline.cwd / "backfill.csv")
        by_key = {tuple(line.split(",")[5:7]): line for line in backfill[1:]}
        for line in live[1:]:
            assert by_key[tuple(line.split(",")[5:7])] == line
        seqs = sorted({int(line.split(",")[6]) for line in live[1:]})
        assert seqs[-1] - seqs[0] + 1 > len(seqs)  # the restart skipped ticks, never repeated


class TestSpeed:
    def test_speed_runs_an_hour_per_second_with_exact_spacing(self, pipeline: Pipeline):
        """--speed 3600 at 1 Hz logs an hour of samples a second, one simulated second apart,
        seq counting the seconds since --start."""
        pipeline.logger("--flush-interval", "0.1")
        pipeline.producer("--rate", "1", "--speed", "3600", "--start", START, "--seed", "2")
        path = pipeline.cwd / "data" / "stream_log.csv"
        wait_until(lambda: len(lines(path)) > 3000, timeout=10)
        frame = pd.read_csv(path, parse_dates=["timestamp"])
        assert (frame["timestamp"].diff().dropna() == pd.Timedelta(seconds=1)).all()
        since_start = frame["timestamp"] - pd.Timestamp(START)
        assert (since_start == pd.to_timedelta(frame["seq"], unit="s")).all()
        assert np.all(np.diff(frame["seq"]) == 1)


class TestReplay:
    def test_replays_a_nab_file_into_the_chosen_metric(self, pipeline: Pipeline):
        """A NAB `timestamp,value` file is replayed into --replay-metric, every row in order,
        its spacing kept (5 minutes of simulated time) and rebased to now."""
        nab = pipeline.cwd / "nab.csv"
        stamps = pd.date_range("2014-02-14 14:30:00", periods=30, freq="5min")
        values = np.round(np.linspace(10, 40, 30), 1)
        pd.DataFrame({"timestamp": stamps, "value": values}).to_csv(nab, index=False)
        pipeline.logger("--flush-interval", "0.1")
        pipeline.producer(
            "--source",
            "replay",
            "--replay-file",
            str(nab),
            "--speed",
            "3000",
            "--replay-metric",
            "net",
        )
        path = pipeline.cwd / "data" / "stream_log.csv"
        wait_until(lambda: len(lines(path)) > 30, timeout=15)
        frame = pd.read_csv(path, parse_dates=["timestamp"])
        assert frame["net"].tolist() == values.tolist()
        assert frame["cpu"].isna().all()
        gaps = frame["timestamp"].diff().dropna()
        assert (gaps == pd.Timedelta(minutes=5)).all()  # the file's time axis, paced by --speed
        assert abs(frame["timestamp"].iloc[0] - pd.Timestamp.now()) < pd.Timedelta(seconds=30)

    def test_replays_our_own_log_with_its_labels_in_a_loop(self, pipeline: Pipeline):
        """Our own log replays with its values and labels intact, and with --replay-loop goes
        round again with seq still counting up."""
        generate(
            pipeline.cwd,
            "source.csv",
            "--duration",
            "20s",
            "--devices",
            "2",
            "--seed",
            "4",
            "--start",
            START,
            "--anomaly-rate",
            "60",
        )
        original = pd.read_csv(pipeline.cwd / "source.csv")
        pipeline.logger("--flush-interval", "0.1")
        pipeline.producer(
            "--source", "replay", "--replay-file", "source.csv", "--speed", "20", "--replay-loop"
        )
        path = pipeline.cwd / "data" / "stream_log.csv"
        wait_until(lambda: len(lines(path)) > 100, timeout=15)
        replayed = pd.read_csv(path)
        columns = ["cpu", "mem", "disk_io", "net", "device", "anomaly", "anomaly_id"]
        first_round = replayed.iloc[:40][columns].reset_index(drop=True)
        pd.testing.assert_frame_equal(first_round, original[columns], check_dtype=False)
        for _, device in replayed.groupby("device"):
            assert np.all(np.diff(device["seq"]) == 1)  # seq goes on across loops


class TestLive:
    def test_streams_this_machines_metrics(self, pipeline: Pipeline):
        """The live source logs this machine's metrics as one device, in range, seq contiguous."""
        pipeline.producer("--source", "live", "--rate", "5")
        pipeline.logger("--flush-interval", "0.1")
        path = pipeline.cwd / "data" / "stream_log.csv"
        wait_until(lambda: len(lines(path)) > 6, timeout=10)
        frame = pd.read_csv(path)
        assert frame["cpu"].between(0, 100).all() and frame["mem"].between(0, 100).all()
        assert (frame["disk_io"] >= 0).all() and (frame["net"] >= 0).all()
        assert frame["device"].nunique() == 1
        assert np.all(np.diff(frame["seq"]) == 1)


class TestWindowsFile:
    @pytest.mark.slow
    def test_logger_keeps_windows_that_match_the_labels(self, pipeline: Pipeline):
        """The live logger's windows file agrees with its CSV labels, and exports to NAB."""
        pipeline.producer(
            "--rate",
            "10",
            "--devices",
            "3",
            "--anomaly-rate",
            "60",
            "--anomaly-kinds",
            "spike,dip,dropout",
            "--start",
            START,
            "--speed",
            "20",
        )
        logger = pipeline.logger("--flush-interval", "0.1")
        path = pipeline.cwd / "data" / "stream_log.csv"
        wait_until(lambda: len(lines(path)) > 4000, timeout=20)
        assert logger.stop()[0] == 0
        frame = pd.read_csv(path, parse_dates=["timestamp"])
        frame["timestamp"] = frame["timestamp"].dt.tz_localize("UTC")  # the windows' say UTC
        labelled = frame[frame["anomaly_id"].notna()]
        expected = labelled.groupby("anomaly_id").agg(start=("timestamp", "min"))
        windows = pd.read_csv(
            pipeline.cwd / "data" / "stream_log.windows.csv", parse_dates=["start"]
        )
        got = windows.groupby("anomaly_id").agg(start=("start", "min"))
        expected.index = expected.index.astype("int64")
        assert len(got) >= 5
        pd.testing.assert_frame_equal(expected.sort_index(), got.sort_index())
        nab = subprocess.run(
            [sys.executable, "-m", "logger", "windows", "data/stream_log.csv"],
            cwd=pipeline.cwd,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        import json

        exported = json.loads(nab.stdout)
        assert sum(len(v) for v in exported.values()) == len(got)
        assert all(key.startswith("stream_log/host-") for key in exported)
