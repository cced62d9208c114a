"""End to end: the real producer, logger and broadcaster as subprocesses, real clients."""

from __future__ import annotations

import csv
import json
import re
import signal
import time
import urllib.request
from collections import defaultdict

import pandas as pd

from common.schema import CSV_HEADER
from conftest import Pipeline, Proc, receive, wait_until

TIMESTAMP_MS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")
TIMESTAMP_S = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
ONE_DECIMAL = re.compile(r'"(cpu|mem|disk_io|net)":(-?\d+\.\d|null)[,}]')


def csv_rows(path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def metrics(proc: Proc) -> dict[str, float]:
    """The figures a process serves on /metrics, by name: the producer's and logger's on
    `--metrics-port any` (read back from the ready file), the broadcaster's on its WS port."""
    port = proc.info.get("metrics_port") or proc.info["ws_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: float(value) for name, value in pairs}


def series_state(pipeline: Pipeline) -> str:
    """The producer's saved series (rewritten only when it starts a new one)."""
    return (pipeline.cwd / "data" / "producer_state.json").read_text()


def steady(read, quiet: float = 0.3, timeout: float = 10.0) -> float:
    """What `read()` returns once it has not changed for `quiet` seconds."""
    value, since = read(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still changing after {timeout}s: {value}"
        time.sleep(0.05)
        if (now := read()) != value:
            value, since = now, time.monotonic()
    return value


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
                "anomaly_root",
                "event",
                "anomaly_metrics",
            ]
            assert TIMESTAMP_MS.match(sample["timestamp"])
            if sample["anomaly"] == "dropout":
                continue
            assert 0 <= sample["cpu"] <= 100 and 0 <= sample["mem"] <= 100
            assert sample["disk_io"] >= 0 and sample["net"] >= 0
        assert {s["device"] for s in samples} == {"host-01", "host-02", "host-03"}
        assert_contiguous(samples)

    def test_raw_frames_have_one_decimal(self, pipeline: Pipeline):
        """Raw WebSocket frames are text, with exactly one decimal on each of the four metrics."""
        from websockets.sync.client import connect

        pipeline.producer("--rate", "10")
        pipeline.broadcaster()
        with connect(pipeline.ws_url, open_timeout=10) as ws:
            for _ in range(5):
                frame = ws.recv(timeout=10)
                assert isinstance(frame, str)
                assert len(ONE_DECIMAL.findall(frame)) == 4, frame

    def test_one_hertz_uses_whole_seconds(self, pipeline: Pipeline):
        """At 1 Hz timestamps have no milliseconds and are exactly one second apart."""
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
        """A restarted logger appends to its CSV (one header, seqs unique and increasing) and
        stops within 2 s of SIGTERM."""
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
        saved = series_state(pipeline)
        producer.kill()
        time.sleep(1.0)  # the scenario: the producer stays down 1 s while the others run
        assert logger.popen.poll() is None and broadcaster.popen.poll() is None
        pipeline.producer("--rate", "10", "--devices", "2")
        assert series_state(pipeline) == saved  # it continued the saved series, not a new one
        after = receive(pipeline.ws_url + "/?history=0", 10)  # live ones only, not the latest
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
        """Each process exits 0 within 2 s of SIGTERM/SIGINT, and the logger writes every row
        it was holding, up to the producer's last seq."""
        producer = pipeline.producer("--rate", "50", "--devices", "5")
        # A flush interval longer than the test: the rows are held until shutdown.
        logger = pipeline.logger("--flush-interval", "5", "--metrics-port", "any")
        broadcaster = pipeline.broadcaster()
        receive(pipeline.ws_url, 50)
        wait_until(lambda: metrics(logger)["stream_rows_pending"] >= 50, timeout=10)
        path = pipeline.cwd / "data" / "stream_log.csv"
        assert len(csv_rows(path)) == 0  # still pending in the logger
        code, took = producer.stop()
        assert (code, took < 2) == (0, True)
        # The producer's own account of what it published, printed as it exits (no metrics
        # or ready file outlive it); the periodic status line also says "last seq".
        last_seq = int(
            producer.wait_for(r"stopped after publishing \d+ samples; last seq (\d+)").group(1)
        )
        # The producer is gone: the logger's count can only grow by what was in flight.
        steady(lambda: metrics(logger)["stream_samples_received_total"])
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
        """Malformed messages are dropped and counted (logger and broadcaster /metrics); neither
        crashes, and only the valid samples reach the CSV."""
        import numpy as np
        import zmq

        from common import schema

        context = zmq.Context()
        rogue = context.socket(zmq.PUB)
        rogue.linger = 0
        rogue.bind(pipeline.zmq)
        try:
            logger = pipeline.logger("--flush-interval", "0.1", "--metrics-port", "any")
            broadcaster = pipeline.broadcaster()
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

            def dropped(proc: Proc) -> float:
                return metrics(proc)["stream_malformed_messages_total"]

            def done() -> bool:  # both subscribers have joined and taken a full round
                return len(csv_rows(path)) >= 3 and dropped(broadcaster) >= len(garbage)

            deadline = time.monotonic() + 10
            while not done() and time.monotonic() < deadline:
                for frames in garbage:
                    rogue.send_multipart(frames)
                rows["seq"] += 1
                rogue.send_multipart(schema.encode(schema.Batch(rows)))
                time.sleep(0.1)  # one round every 0.1 s until both subscribers have seen some
            logged = pd.read_csv(path)
            assert len(logged) >= 3 and set(logged["device"]) == {"host-01"}
            assert np.all(np.diff(logged["seq"]) == 1)
            assert logger.popen.poll() is None and broadcaster.popen.poll() is None
            # At least one full round reached each of them after it joined.
            assert dropped(logger) >= len(garbage)
            assert dropped(broadcaster) >= len(garbage)
        finally:
            rogue.close()
            context.term()
