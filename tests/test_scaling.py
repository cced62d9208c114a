"""Several producers and loggers: devices shared out, each sample logged once, the union checked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request

import pandas as pd
from websockets.sync.client import connect

from common.shards import Shard
from conftest import REPO, Pipeline, wait_until

START = "2025-08-04T00:00:00"
FLEET = ["--devices", "6", "--seed", "11", "--start", START, "--anomaly-rate", "30"]


def rows(path) -> list[str]:
    return path.read_text().splitlines()[1:] if path.exists() else []


def verify(pipeline: Pipeline, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "logger", "verify", *names],
        cwd=pipeline.cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_two_producers_share_the_devices_and_match_a_single_producer(pipeline: Pipeline):
    """Producers 1/2 and 2/2 each simulate their own devices, on endpoints of their own, and
    every sample equals, byte for byte, what one producer with the same seed makes."""
    first = pipeline.producer("--shard", "1/2", "--rate", "10", *FLEET)
    second = pipeline.producer("--shard", "2/2", "--rate", "10", *FLEET)
    assert first.info["pub"] != second.info["pub"]
    assert second.info["pub"].endswith("samples-2.sock")
    pipeline.logger("--producers", "2", "--flush-interval", "0.1")
    log = pipeline.cwd / "data" / "stream_log.csv"
    wait_until(lambda: len(rows(log)) > 150, timeout=15)
    first.stop()
    second.stop()
    live = rows(log)
    by_device: dict[str, list[str]] = {}
    for line in live:
        by_device.setdefault(line.split(",")[5], []).append(line)
    assert sorted(by_device) == [f"host-0{i}" for i in range(1, 7)]
    for device in by_device:  # each device came from the one producer that owns it
        owner = 1 if Shard(1, 2).owns(device) else 2
        assert Shard(owner, 2).owns(device)
    last_seq = max(int(line.split(",")[6]) for line in live)
    subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--out", "single.csv", "--no-progress"]
        + ["--rate", "10", *FLEET, "--duration", f"{(last_seq + 1) / 10}s"],
        cwd=pipeline.cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        timeout=120,
    )
    single = {tuple(line.split(",")[5:7]): line for line in rows(pipeline.cwd / "single.csv")}
    for line in live:
        assert single[tuple(line.split(",")[5:7])] == line


def test_two_loggers_split_the_devices_and_verify_checks_the_union(pipeline: Pipeline):
    """Loggers 1/2 and 2/2 each write their own file with their own devices only; verify and
    windows take all the parts at once, and a device in two logs is reported."""
    pipeline.producer("--shard", "1/2", "--rate", "20", *FLEET)
    pipeline.producer("--shard", "2/2", "--rate", "20", *FLEET)
    for shard in ("1/2", "2/2"):
        pipeline.logger("--producers", "2", "--shard", shard, "--flush-interval", "0.1")
    data = pipeline.cwd / "data"
    parts = [data / "stream_log.1-of-2.csv", data / "stream_log.2-of-2.csv"]
    wait_until(lambda: all(len(rows(p)) > 100 for p in parts), timeout=15)
    for proc in pipeline.procs:
        proc.stop()
    devices = [{line.split(",")[5] for line in rows(p)} for p in parts]
    assert devices[0] and devices[1] and not devices[0] & devices[1]
    assert devices[0] | devices[1] == {f"host-0{i}" for i in range(1, 7)}
    for index, found in enumerate(devices, 1):
        assert all(Shard(index, 2).owns(d) for d in found)
    assert not (data / "stream_log.csv").exists()
    report = verify(pipeline, "data/stream_log.2-of-2.csv", "data/stream_log.1-of-2.csv")
    assert report.returncode == 0, report.stdout
    assert "6 device(s)" in report.stdout
    windows = subprocess.run(
        [sys.executable, "-m", "logger", "windows", *map(str, parts)],
        cwd=pipeline.cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    keys = json.loads(windows.stdout)
    assert keys and all(k.startswith("stream_log/host-0") for k in keys)
    # The same device in two loggers' files is a problem verify names.
    frame = pd.read_csv(parts[0], dtype=str, keep_default_na=False)
    frame.head(1).to_csv(parts[1], mode="a", header=False, index=False)
    doubled = verify(pipeline, *map(str, parts))
    assert doubled.returncode == 1 and "is in both" in doubled.stdout


def test_a_logger_shard_catches_up_only_on_its_own_devices(pipeline: Pipeline):
    """A logger 2/2 restarted after a kill refills its own devices from both producers'
    histories and never writes another logger's device."""
    pipeline.producer("--shard", "1/2", "--rate", "50", *FLEET)
    pipeline.producer("--shard", "2/2", "--rate", "50", *FLEET)
    args = ("--producers", "2", "--shard", "2/2", "--flush-interval", "0.1")
    logger = pipeline.logger(*args)
    part = pipeline.cwd / "data" / "stream_log.2-of-2.csv"
    wait_until(lambda: len(rows(part)) > 50, timeout=15)
    logger.kill()
    before = len(rows(part))
    restarted = pipeline.logger(*args)
    assert restarted.info["caught_up"] and restarted.info["caught_up"] > 0
    wait_until(lambda: len(rows(part)) > before + 100, timeout=15)
    restarted.stop()
    found = {line.split(",")[5] for line in rows(part)}
    assert found and all(Shard(2, 2).owns(d) for d in found)
    report = verify(pipeline, str(part.relative_to(pipeline.cwd)))
    assert report.returncode == 0, report.stdout


def test_ctl_reaches_every_producer_and_inject_the_owner(pipeline: Pipeline):
    """`ctl status` lists both producers with their shards and devices; `ctl inject` goes to
    the producer that owns the device; `ctl pause` pauses both."""
    pipeline.producer("--shard", "1/2", "--rate", "10", *FLEET)
    pipeline.producer("--shard", "2/2", "--rate", "10", *FLEET)
    status = pipeline.ctl("--producers", "2", "status")
    assert status.returncode == 0, status.stderr
    answers = json.loads(status.stdout)
    assert [a["producer"] for a in answers] == [1, 2]
    assert [a["shard"] for a in answers] == ["1/2", "2/2"]
    owned = [set(a["owned_devices"]) for a in answers]
    assert not owned[0] & owned[1] and len(owned[0] | owned[1]) == 6
    target = sorted(owned[1])[0]
    injected = pipeline.ctl("--producers", "2", "inject", "spike", "--device", target)
    assert injected.returncode == 0, injected.stderr
    answer = json.loads(injected.stdout)
    assert [a["producer"] for a in answer] == [2] and answer[0]["device"] == target
    paused = pipeline.ctl("--producers", "2", "pause")
    assert paused.returncode == 0 and [a["paused"] for a in json.loads(paused.stdout)] == [
        True,
        True,
    ]


def test_a_broadcaster_takes_only_the_groups_its_clients_want(pipeline: Pipeline):
    """With every client asking for host-01 alone, the broadcaster subscribes to host-01's
    device group only and receives a fraction of the stream; a client wanting everything
    brings the whole stream back. (Its /metrics/samples, which shows every device, is off.)"""
    pipeline.producer("--rate", "50", "--devices", "8", "--anomaly-rate", "0")
    pipeline.broadcaster("--sample-metrics-devices", "0")

    def received() -> float:
        url = pipeline.ws_url.replace("ws://", "http://") + "/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return float(re.search(r"^stream_samples_received_total (\S+)$", text, re.M)[1])

    def rate_over(seconds: float) -> float:
        before, began = received(), time.monotonic()
        time.sleep(seconds)  # the measurement window itself
        return (received() - before) / (time.monotonic() - began)

    with connect(pipeline.ws_url + "/?devices=host-01", open_timeout=5, max_queue=None) as one:
        assert json.loads(one.recv(timeout=5))["device"] == "host-01"
        narrow = rate_over(2.0)
        with connect(pipeline.ws_url + "/", open_timeout=5, max_queue=None) as every:
            every.recv(timeout=5)
            wide = rate_over(2.0)
    assert narrow < 0.3 * wide, (narrow, wide)
    assert wide > 300  # 8 devices x 50 Hz
