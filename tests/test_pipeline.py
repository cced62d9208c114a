"""End to end: the real producer, logger and broadcaster as subprocesses, real clients."""

from __future__ import annotations

import csv
import json
import re
import signal
import time
from collections import defaultdict

import pandas as pd

from common.schema import CSV_HEADER
from conftest import Pipeline, receive, wait_until

TIMESTAMP_MS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")
TIMESTAMP_S = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
ONE_DECIMAL = re.compile(r'"(cpu|mem|disk_io|net)":(-?\d+\.\d|null)[,}]')


def csv_rows(path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_contiguous(samples: list[dict]) -> None:
    """Per device, seq goes up by exactly one from sample to sample."""
    by_device = defaultdict(list)
    for sample in samples:
        by_device[sample["device"]].append(sample["seq"])
    for device, seqs in by_device.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (device, seqs)


class TestContract:
    def test_samples_arrive_in_the_contract_format(self, pipeline: Pipeline):
        """JSON frames: the five keys first and in order, one decimal, device and seq."""
        pipeline.producer("--rate", "5", "--devices", "3", "--seed", "1")
        pipeline.broadcaster()
        samples = receive(pipeline.ws_url, 30)
        for sample in samples:
            assert list(sample) == [
                "timestamp",
                "cpu",
                "mem",
                "disk_io",
                "net",
                "device",
                "seq",
                "anomaly",
                "anomaly_id",
            ]
            assert TIMESTAMP_MS.match(sample["timestamp"])
            if sample["anomaly"] == "dropout":
                continue
            assert 0 <= sample["cpu"] <= 100 and 0 <= sample["mem"] <= 100
            assert sample["disk_io"] >= 0 and sample["net"] >= 0
        assert {s["device"] for s in samples} == {"host-01", "host-02", "host-03"}
        assert_contiguous(samples)

    def test_raw_frames_have_one_decimal(self, pipeline: Pipeline):
        from websockets.sync.client import connect

        pipeline.producer("--rate", "10")
        pipeline.broadcaster()
        with connect(pipeline.ws_url, open_timeout=10) as ws:
            for _ in range(5):
                frame = ws.recv(timeout=10)
                assert isinstance(frame, str)
                assert len(ONE_DECIMAL.findall(frame)) == 4, frame

    def test_one_hertz_uses_whole_seconds(self, pipeline: Pipeline):
        pipeline.producer("--rate", "1")
        pipeline.broadcaster()
        (first, second) = receive(pipeline.ws_url, 2, timeout=10)
        assert TIMESTAMP_S.match(first["timestamp"])
        gap = pd.Timestamp(second["timestamp"]) - pd.Timestamp(first["timestamp"])
        assert gap == pd.Timedelta(seconds=1)

    def test_csv_holds_the_samples_clients_received(self, pipeline: Pipeline):
        """Same timestamps, same values, same text, for the same (device, seq)."""
        pipeline.producer("--rate", "20", "--devices", "2", "--seed", "4")
        pipeline.logger("--flush-interval", "0.1")
        pipeline.broadcaster()
        samples = receive(pipeline.ws_url, 60)
        path = pipeline.cwd / "data" / "stream_log.csv"
        wanted = {(s["device"], str(s["seq"])) for s in samples}
        wait_until(
            lambda: wanted <= {(r["device"], r["seq"]) for r in csv_rows(path)},
            timeout=10,
            message="the CSV never held every sample the client received",
        )
        logged = {(r["device"], r["seq"]): r for r in csv_rows(path)}
        for sample in samples:
            row = logged[(sample["device"], str(sample["seq"]))]
            assert row["timestamp"] == sample["timestamp"]
            for metric in ("cpu", "mem", "disk_io", "net"):
                value = sample[metric]
                assert row[metric] == ("" if value is None else json.dumps(value))
            assert row["anomaly"] == (sample["anomaly"] or "")
            assert row["anomaly_id"] == str(sample["anomaly_id"] or "")
        assert path.read_text().splitlines()[0] == CSV_HEADER
        frame = pd.read_csv(path, parse_dates=["timestamp"])
        assert str(frame["timestamp"].dtype).startswith("datetime64")


class TestRestarts:
    def test_logger_restart_appends_without_a_second_header(self, pipeline: Pipeline):
        pipeline.producer("--rate", "20")
        path = pipeline.cwd / "data" / "stream_log.csv"
        for _ in range(2):
            logger = pipeline.logger("--flush-interval", "0.1")
            wanted = len(csv_rows(path)) + 10
            wait_until(lambda n=wanted: len(csv_rows(path)) >= n, timeout=10)
            code, took = logger.stop()
            assert code == 0 and took < 2
        text = path.read_text()
        assert text.count("timestamp,") == 1
        seqs = pd.read_csv(path, parse_dates=["timestamp"])["seq"]
        assert seqs.is_monotonic_increasing and seqs.is_unique

    def test_producer_restart_never_repeats_a_seq(self, pipeline: Pipeline):
        """Stopping the producer leaves the others running; a new one continues the series."""
        producer = pipeline.producer("--rate", "10", "--devices", "2")
        logger = pipeline.logger("--flush-interval", "0.1")
        broadcaster = pipeline.broadcaster()
        before = receive(pipeline.ws_url, 10)
        producer.kill()
        time.sleep(1.0)
        assert logger.popen.poll() is None and broadcaster.popen.poll() is None
        restarted = pipeline.producer("--rate", "10", "--devices", "2")
        assert "continuing series" in "\n".join(restarted.lines)
        after = receive(pipeline.ws_url, 10)
        assert min(s["seq"] for s in after) > max(s["seq"] for s in before)
        path = pipeline.cwd / "data" / "stream_log.csv"
        wait_until(lambda: len(csv_rows(path)) > 20, timeout=10)
        logged = pd.read_csv(path)
        assert not logged.duplicated(["device", "seq"]).any()

    def test_broadcaster_restart_while_the_others_run(self, pipeline: Pipeline):
        """The logger keeps writing and the test client reconnects by itself."""
        pipeline.producer("--rate", "10")
        pipeline.logger("--flush-interval", "0.1")
        broadcaster = pipeline.broadcaster()
        port = pipeline.ws_url.rsplit(":", 1)[1]
        client = pipeline.start_script("clients/test_client.py", "--url", pipeline.ws_url)
        client.wait_for(r"^Received: ", stream="out")
        code, took = broadcaster.stop()
        assert code == 0 and took < 2
        client.wait_for(r"reconnecting", timeout=5)
        path = pipeline.cwd / "data" / "stream_log.csv"
        rows_then = len(csv_rows(path))
        wait_until(lambda: len(csv_rows(path)) > rows_then + 5, timeout=5)
        seen = len(client.out)
        pipeline.broadcaster("--ws-port", port)
        wait_until(lambda: len(client.out) > seen + 3, timeout=10)
        assert client.out.count("Connected to server. Listening for data...") == 2
        assert client.popen.poll() is None


class TestShutdown:
    def test_sigterm_stops_each_process_quickly_and_flushes_the_csv(self, pipeline: Pipeline):
        producer = pipeline.producer("--rate", "50", "--devices", "5")
        logger = pipeline.logger("--flush-interval", "5")  # rows held until shutdown
        broadcaster = pipeline.broadcaster()
        receive(pipeline.ws_url, 50)
        time.sleep(0.5)
        path = pipeline.cwd / "data" / "stream_log.csv"
        assert len(csv_rows(path)) == 0  # still pending in the logger
        code, took = producer.stop()
        assert (code, took < 2) == (0, True)
        last_seq = int(producer.wait_for(r"last seq (\d+)").group(1))
        time.sleep(0.5)  # let the last published ticks reach the logger
        code, took = logger.stop()
        assert (code, took < 2) == (0, True)
        logged = pd.read_csv(path)
        per_device = logged.groupby("device")["seq"].agg(["min", "max", "count"])
        assert len(per_device) == 5
        assert (per_device["max"] == last_seq).all()  # nothing held back at shutdown
        assert (per_device["max"] - per_device["min"] + 1 == per_device["count"]).all()
        code, took = broadcaster.stop(signal.SIGINT)
        assert (code, took < 2) == (0, True)


class TestBadMessages:
    def test_garbage_on_the_bus_is_dropped_and_counted(self, pipeline: Pipeline):
        """Malformed messages never crash a subscriber nor reach the CSV or a client."""
        import numpy as np
        import zmq

        from common import schema

        context = zmq.Context()
        rogue = context.socket(zmq.PUB)
        rogue.linger = 0
        rogue.bind(pipeline.zmq)
        try:
            logger = pipeline.logger("--flush-interval", "0.1")
            pipeline.broadcaster()
            rows = schema.empty_rows(1)
            rows["ts_ms"], rows["device"], rows["cpu"] = 1_754_229_600_000, b"host-01", 1.0
            good = schema.encode(schema.Batch(rows))
            garbage = [
                [b"samples"],
                [b"samples", b"", b""],
                [b"samples", good[1], b"\x00" * 1_000_000],
                [b"samplesX", good[1], good[2]],
                [b"samples", good[1], good[2][:-1]],
            ]
            path = pipeline.cwd / "data" / "stream_log.csv"
            deadline = time.monotonic() + 10
            while len(csv_rows(path)) < 3 and time.monotonic() < deadline:
                for frames in garbage:
                    rogue.send_multipart(frames)
                rows["seq"] += 1
                rogue.send_multipart(schema.encode(schema.Batch(rows)))
                time.sleep(0.1)
            logged = pd.read_csv(path)
            assert len(logged) >= 3 and set(logged["device"]) == {"host-01"}
            assert np.all(np.diff(logged["seq"]) == 1)
            assert logger.popen.poll() is None
            logger.wait_for("dropped a malformed message")
        finally:
            rogue.close()
            context.term()
