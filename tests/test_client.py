"""clients/test_client.py: the spec's output, --count, and reconnecting with backoff."""

from __future__ import annotations

import json
import time

from conftest import Pipeline


def test_waits_for_the_server_then_prints_the_spec_lines(pipeline: Pipeline):
    """Started before the broadcaster: one line says it is retrying, then the spec's lines."""
    pipeline.producer("--rate", "10")
    client = pipeline.start_script("clients/test_client.py", "--url", "ws://127.0.0.1:1")
    client.wait_for("reconnecting to ws://127.0.0.1:1")
    time.sleep(1.0)
    assert sum("reconnecting" in line for line in client.lines) == 1  # one line per outage
    client.stop()


def test_count_exits_zero_after_n_samples(pipeline: Pipeline):
    pipeline.producer("--rate", "10")
    pipeline.broadcaster()
    client = pipeline.start_script(
        "clients/test_client.py", "--url", pipeline.ws_url, "--count", "5"
    )
    assert client.popen.wait(15) == 0
    time.sleep(0.1)  # let the reader thread take the last lines
    assert client.out[0] == "Connected to server. Listening for data..."
    received = [line for line in client.out if line.startswith("Received: ")]
    assert len(received) == 5 and len(client.out) == 6
    for line in received:
        sample = json.loads(line.removeprefix("Received: "))
        assert list(sample)[:5] == ["timestamp", "cpu", "mem", "disk_io", "net"]


def test_filters_csv_format_and_stats(pipeline: Pipeline):
    """--devices, --fields and --format csv shape the output; --stats reports on stderr."""
    pipeline.producer("--rate", "10", "--devices", "3")
    pipeline.broadcaster()
    client = pipeline.start_script(
        "clients/test_client.py",
        "--url",
        pipeline.ws_url,
        "--devices",
        "host-02",
        "--fields",
        "cpu,net",
        "--format",
        "csv",
        "--stats",
        "--count",
        "15",
    )
    assert client.popen.wait(20) == 0
    time.sleep(0.1)
    assert client.out[0] == "timestamp,cpu,net,device,seq,anomaly,anomaly_id"
    rows = [line.split(",") for line in client.out[1:]]
    assert len(rows) == 15 and {r[3] for r in rows} == {"host-02"}
    client.wait_for(r"stats: \d+ samples/s, latency p50 [\d.]+ ms p99 [\d.]+ ms, 0 missing")


def test_table_format_without_a_terminal_prints_lines(pipeline: Pipeline):
    pipeline.producer("--rate", "10", "--devices", "2")
    pipeline.broadcaster()
    client = pipeline.start_script(
        "clients/test_client.py",
        "--url",
        pipeline.ws_url,
        "--format",
        "table",
        "--count",
        "4",
        "--max-rate",
        "2",
    )
    assert client.popen.wait(20) == 0
    time.sleep(0.1)
    assert len(client.out) == 4 and all(line.startswith("host-0") for line in client.out)
