"""Each device's newest sample for Prometheus (/metrics/samples): scraped by a real
Prometheus server, bounded, its labels escaped."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from broadcaster.latest import Latest
from brokers import Prometheus
from common import schema
from conftest import Pipeline, Recorder, wait_until


def test_a_prometheus_server_scrapes_every_devices_newest_sample(pipeline: Pipeline, tmp_path):
    """A real Prometheus scrapes /metrics/samples behind the broadcaster's token (as its
    docs' scrape config says); its query API then gives, for every device, the values of the
    sample with the seq it gives, exactly as a WebSocket client received that sample, the
    current anomaly with the metrics it alters (an injected mem-only leak), and each device's
    role as the producer has it."""
    pipeline.producer("--rate", "10", "--devices", "6", "--anomaly-rate", "0")
    broadcaster = pipeline.broadcaster(env={"STREAM_WS_TOKEN": "scrape-me"})
    recorder = Recorder(pipeline.ws_url, "batch=1&history=0&token=scrape-me")
    target = pipeline.ws_url.removeprefix("ws://")
    job = {
        "metrics_path": "/metrics/samples",
        "authorization": {"credentials": "scrape-me"},
        "static_configs": [{"targets": [target]}],
    }
    prometheus = Prometheus(tmp_path, {"fleet": job})
    try:
        done = pipeline.ctl("inject", "memory_leak", "--device", "host-02", "--duration", "60s")
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: prometheus.query('stream_device_anomaly{device="host-02",kind="memory_leak"}'),
            timeout=20,
            message="Prometheus has no memory_leak of host-02",
        )
        assert [t["health"] for t in prometheus.targets()] == ["up"]
        found = prometheus.query(
            '{__name__=~"stream_device_(value|seq|anomaly|info)", job="fleet"}'
        )
    finally:
        prometheus.close()
        recorder.close()
    by_device: dict[str, dict] = {}
    for series in found:
        labels, value = series["metric"], float(series["value"][1])
        mine = by_device.setdefault(labels["device"], {})
        if labels["__name__"] == "stream_device_value":
            mine[labels["metric"]] = value
        elif labels["__name__"] == "stream_device_seq":
            mine["seq"] = int(value)
        elif labels["__name__"] == "stream_device_anomaly":
            mine["anomaly"] = (labels["kind"], labels.get("metrics", ""))  # "": no label
        else:
            mine["role"] = labels["role"]
    assert sorted(by_device) == [f"host-{i:02d}" for i in range(1, 7)]
    wait_until(
        lambda: all((d, m["seq"]) in recorder.seen for d, m in by_device.items()),
        timeout=5,
        message="the WebSocket client did not get the samples Prometheus has",
    )
    status = json.loads(pipeline.ctl("status").stdout)
    for device, scraped in by_device.items():
        sample = recorder.seen[(device, scraped["seq"])]
        for metric in schema.METRICS:
            if sample[metric] is None:
                assert math.isnan(scraped[metric]), (device, metric)
            else:
                assert scraped[metric] == sample[metric], (device, metric, scraped, sample)
        expected = (sample["anomaly"] or "none", sample["anomaly_metrics"] or "")
        assert scraped["anomaly"] == expected, (device, scraped, sample)
        assert scraped["role"] == status["roles"][device]
    assert by_device["host-02"]["anomaly"] == ("memory_leak", "mem")
    assert broadcaster.popen.poll() is None


def samples_page(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_the_bound_holds_and_the_page_is_on_both_ports(pipeline: Pipeline):
    """With --sample-metrics-devices 3 and 5 devices, 3 devices are shown (9 series each)
    and 2 counted as omitted, on the WebSocket port and on --metrics-port alike; with 0 the
    page is gone."""
    pipeline.producer("--rate", "5", "--devices", "5")
    bounded = pipeline.broadcaster("--sample-metrics-devices", "3", "--metrics-port", "any")
    base = pipeline.ws_url.replace("ws://", "http://")
    wait_until(lambda: "stream_devices_shown 3" in samples_page(base + "/metrics/samples")[1], 10)
    for url in (
        base + "/metrics/samples",
        f"http://127.0.0.1:{bounded.info['metrics_port']}/metrics/samples",
    ):
        status, text = samples_page(url)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        devices = {s.labels["device"] for s in families["stream_device_value"].samples}
        assert status == 200 and len(devices) == 3, url
        per_device = sum(
            len(f.samples) for name, f in families.items() if name.startswith("stream_device_")
        )
        assert per_device == 3 * 9, url
        assert families["stream_devices_omitted"].samples[0].value == 2
    pipeline.broadcaster("--sample-metrics-devices", "0")
    assert samples_page(pipeline.ws_url.replace("ws://", "http://") + "/metrics/samples")[0] == 404


def test_labels_are_escaped_and_values_read_back():
    """Device ids with quotes, backslashes and other scripts read back unchanged through a
    Prometheus text parser; a missing value is NaN; the anomaly and event are labels."""
    names = ['rack "4"', "back\\slash", "温度センサー-7"]
    rows = schema.empty_rows(3)
    rows["device"] = schema.device_array(names)
    rows["seq"] = [7, 8, 9]
    rows["ts_ms"] = 1_754_301_600_500
    rows["cpu"] = [1.5, float("nan"), 99.9]
    rows["anomaly"][1] = schema.ANOMALY_KINDS.index("spike") + 1
    rows["anomaly_id"][1] = 5
    rows["anomaly_metrics"][1] = 1
    rows["event"][2] = schema.EVENT_KINDS.index("deploy") + 1
    latest = Latest(10)
    latest.update(schema.Batch(rows))
    text = latest.exposition(lambda d: ("web", "front") if d == names[0] else None).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    cpu = {
        s.labels["device"]: s.value
        for s in families["stream_device_value"].samples
        if s.labels["metric"] == "cpu"
    }
    assert cpu[names[0]] == 1.5 and math.isnan(cpu[names[1]]) and cpu[names[2]] == 99.9
    anomaly = {s.labels["device"]: s.labels for s in families["stream_device_anomaly"].samples}
    assert (anomaly[names[1]]["kind"], anomaly[names[1]]["metrics"]) == ("spike", "cpu")
    assert anomaly[names[0]]["kind"] == "none"
    events = {
        s.labels["device"]: s.labels["event"] for s in families["stream_device_event"].samples
    }
    assert events == {names[0]: "none", names[1]: "none", names[2]: "deploy"}
    stamps = families["stream_device_timestamp_seconds"].samples
    assert {s.value for s in stamps} == {1_754_301_600.5}
    [info] = families["stream_device_info"].samples
    assert info.labels == {"device": names[0], "role": "web", "group": "front"}


def test_the_newest_sample_wins_whatever_the_shape_of_the_messages():
    """Ticks of one fleet (held, the newest replacing the older), messages of another shape
    in between (a replay's, a second producer's) and devices past the bound: each shown
    device's sample is its newest, and the omitted ones are counted."""

    def message(devices: list[str], seq: int) -> schema.Batch:
        rows = schema.empty_rows(len(devices))
        rows["device"] = schema.device_array(devices)
        rows["seq"] = seq
        rows["cpu"] = seq / 10
        return schema.Batch(np.frombuffer(rows.tobytes(), schema.RECORD))

    fleet = [f"host-{i:02d}" for i in range(1, 21)]
    latest = Latest(22)
    for seq in range(5):
        latest.update(message(fleet, seq))  # held: one ...
    latest.update(message(["host-03", "odd-1"], 7))  # ... another shape: stored at once
    for seq in range(5, 9):
        latest.update(message(fleet, seq))
    latest.update(message(["host-01", "odd-2", "odd-3"], 9))  # same first device, other shape
    latest.update(message(["odd-4", "odd-5"], 10))  # odd-3 to odd-5: past the bound of 22
    text = latest.exposition().decode()
    seqs = {
        s.labels["device"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "stream_device_seq"
        for s in f.samples
    }
    assert seqs == {**{d: 8 for d in fleet}, "host-01": 9, "odd-1": 7, "odd-2": 9}
    assert "stream_devices_omitted 3" in text and "stream_devices_shown 22" in text
