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
