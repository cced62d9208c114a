"""The live scorer with the real processes: producer, broadcaster, logger, scorer and the
z-score reference detector on a blind stream; blind streams; bad alerts."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import REPO, Pipeline, Proc, wait_until

START = "2025-08-04T00:00:00"
SCENARIO = """
name = "scoring"
[[group]]
role = "web"
count = 2
id = "web-{n:02d}"
  [group.anomalies]
  rate = 30
[[group]]
role = "db"
count = 1
id = "db-01"
[[incident]]
at = "+2m"
root = "db-01"
kind = "incident"
duration = "1m"
  [[incident.symptom]]
  group = "web"
  kind = "level_shift"
  metric = "cpu"
  delay = "10s"
  duration = "40s"
[[deploy]]
at = "+3m30s"
group = "web"
duration = "40s"
"""


def figures(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pairs = (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return {name: float(value) for name, value in pairs}


def scorer(pipeline: Pipeline, alerts: str, *args: str) -> Proc:
    proc = pipeline.start(
        "scorer", "--zmq-pub", pipeline.zmq, "--zmq-catchup", pipeline.catchup,
        "--zmq-alerts", alerts, "--report", "out/report.json", "--picture", "out/report.png",
        "--table", "off", "--every", "1", "--metrics-port", "any", *args,
    )
    proc.ready()
    return proc


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_live_scoring_of_the_zscore_detector_matches_files_and_backfill(pipeline: Pipeline):
    """Producer, broadcaster, logger, scorer and the z-score detector on a blind stream of a
    fast-forwarded scenario: the detector never sees a label, the report's events are the
    logger's windows, and the report equals the one scored offline from a backfill."""
    (pipeline.cwd / "scoring.toml").write_text(SCENARIO)
    alerts = f"ipc://{pipeline.cwd}/alerts.sock"
    live = scorer(pipeline, alerts)
    broadcaster = pipeline.broadcaster("--zmq-alerts", alerts, "--metrics-port", "any")
    logger = pipeline.logger("--flush-interval", "0.1")
    detector = pipeline.start_script("clients/zscore_detector.py", "--url", pipeline.ws_url)
    broadcaster.wait_for(r"client .* connected \(n=1\)", timeout=20)
    producer_args = ["--scenario", "scoring.toml", "--seed", "42", "--start", START]
    producer = pipeline.producer(*producer_args, "--speed", "60")
    wait_until(lambda: figures(live.info["metrics_port"])["stream_samples_received_total"] >= 900,
               timeout=40)
    producer.stop()
    # every alert on its way has arrived: the detector sends none now, the counts agree
    seen: list[tuple[float, float]] = []

    def settled() -> bool:
        sent = figures(broadcaster.info["metrics_port"])["stream_alerts_accepted_total"]
        got = figures(live.info["metrics_port"])["stream_alerts_received_total"]
        seen.append((sent, got))
        return len(seen) > 5 and sent == got and len(set(seen[-5:])) == 1

    wait_until(settled, timeout=20, interval=0.2)
    detector.stop()
    totals = detector.lines[-1]
    assert "labelled 0" in totals, totals
    logger.stop()
    assert live.stop(timeout=20)[0] == 0  # a busy machine draws the picture slowly
    report = json.loads((pipeline.cwd / "out" / "report.json").read_text())
    assert (pipeline.cwd / "out" / "report.png").stat().st_size > 10_000
    assert report["run"]["samples_missed"] == 0 and report["run"]["alerts_lost"] == 0
    mine = report["detectors"]["zscore"]
    assert mine["alerts"]["received"] == int(totals.split("alerts ")[1].split(",")[0]) > 0
    # the events are the logger's windows: parts joined by id, an incident once
    windows = read_rows(pipeline.cwd / "data" / "stream_log.windows.csv")
    anomalies = {w["anomaly_id"]: w for w in windows if w["kind"] != "deploy"}
    roots = {w["root"] for w in anomalies.values()}
    assert mine["truth"]["events"] == len(anomalies)
    assert mine["overall"]["events"] == len(roots) >= 3
    kinds = {}
    for root in roots:
        kinds[anomalies[root]["kind"]] = kinds.get(anomalies[root]["kind"], 0) + 1
    assert {k: v["events"] for k, v in mine["kinds"].items()} == kinds
    assert mine["truth"]["planned"] == {"deploy": len({w["anomaly_id"] for w in windows
                                                       if w["kind"] == "deploy"})}
    # the same report from a backfill of the same span, the detector run over its file
    logged = read_rows(pipeline.cwd / "data" / "stream_log.csv")
    ticks = max(int(r["seq"]) for r in logged) + 1
    assert len(logged) == 3 * ticks == report["run"]["samples"]
    run(["-m", "producer", "generate", *producer_args, "--duration", f"{ticks}s",
         "--out", "bf/train.csv"], pipeline.cwd)
    run([str(REPO / "clients" / "zscore_detector.py"), "--csv", "bf/train.csv", "--out",
         "bf/alerts.csv"], pipeline.cwd)
    offline = json.loads(run(["-m", "scorer", "score", "--windows", "bf/train.windows.csv",
                              "--alerts", "bf/alerts.csv", "--json"], pipeline.cwd).stdout)
    mine.pop("delivery")
    for key in mine:
        assert offline[key] == mine[key], key
    assert offline == mine


def test_blind_streams(pipeline: Pipeline):
    """?labels=0 drops the label keys; --labels blind makes that the default (labels=1 still
    gets them); --labels never refuses labels=1 with an error and stays blind."""
    pipeline.producer("--rate", "20", "--devices", "2", "--anomaly-rate", "60")
    pipeline.broadcaster("--labels", "blind", "--zmq-alerts", "")
    blind_url = pipeline.ws_url
    pipeline.broadcaster("--labels", "never", "--zmq-alerts", "")
    never_url = pipeline.ws_url
    labels = {"anomaly", "anomaly_id", "anomaly_root", "event"}

    def first_samples(url: str, count: int = 20) -> list[dict]:
        out = []
        with connect(url, open_timeout=10, max_queue=None) as ws:
            while len(out) < count:
                message = json.loads(ws.recv(timeout=10))
                out.append(message)
        return out

    blind = first_samples(blind_url + "/?history=0")
    assert all("seq" in s and not labels & set(s) for s in blind)
    labelled = first_samples(blind_url + "/?history=0&labels=1")
    assert all(labels <= set(s) for s in labelled)
    refused = first_samples(never_url + "/?history=0&labels=1")
    assert "labels are not sent" in refused[0]["error"]
    assert all(not labels & set(s) for s in refused[1:])
    with connect(blind_url + "/?history=0&labels=1", open_timeout=10, max_queue=None) as ws:
        ws.send(json.dumps({"subscribe": {"labels": False, "batch": True}}))
        while "subscribed" not in (reply := json.loads(ws.recv(timeout=10))):
            pass
        assert reply["subscribed"]["labels"] is False
        frame = json.loads(ws.recv(timeout=10))
        while not isinstance(frame, list):
            frame = json.loads(ws.recv(timeout=10))
        assert frame and not any(labels & set(s) for s in frame)


@pytest.mark.slow
def test_bad_alerts_get_errors_and_counters(pipeline: Pipeline):
    """Malformed JSON, an unknown device, a seq from the future, an unknown key and a flood
    are refused and counted; a good alert reaches the scorer; another client's stream goes
    on without a gap meanwhile."""
    alerts = f"ipc://{pipeline.cwd}/alerts.sock"
    live = scorer(pipeline, alerts)
    pipeline.producer("--rate", "50", "--devices", "2")
    broadcaster = pipeline.broadcaster("--zmq-alerts", alerts, "--alert-rate", "50",
                                       "--metrics-port", "any")
    watched: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        with connect(pipeline.ws_url + "/?devices=host-02&history=0", open_timeout=10,
                     max_queue=None) as ws:
            while not stop.is_set():
                watched.append(json.loads(ws.recv(timeout=10))["seq"])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with connect(pipeline.ws_url + "/?labels=0&devices=host-01&detector=bad", open_timeout=10,
                 max_queue=None) as ws:
        sample = json.loads(ws.recv(timeout=10))

        def answer(message: str) -> dict:
            ws.send(message)
            while True:
                reply = json.loads(ws.recv(timeout=10))
                if isinstance(reply, dict) and ("error" in reply or "alerted" in reply):
                    return reply

        assert "must be JSON" in answer("{not json")["error"]
        unknown = answer(json.dumps({"alert": {"device": "nope", "seq": 1}}))
        assert "unknown device" in unknown["error"]
        elsewhere = answer(json.dumps({"alert": {"device": "host-02", "seq": 1}}))
        assert "subscription" in elsewhere["error"]
        future = answer(json.dumps({"alert": {"device": "host-01", "seq": sample["seq"] + 10**6}}))
        assert "in the future" in future["error"]
        assert "unknown key" in answer(json.dumps({"alert": {"device": "host-01", "seq": 1,
                                                             "why": 1}}))["error"]
        good = {"device": "host-01", "seq": sample["seq"], "score": 3.5, "kind": "spike"}
        assert answer(json.dumps({"alert": good})) == {"alerted": 1}
        stamped = {"device": "host-01", "timestamp": sample["timestamp"]}
        assert answer(json.dumps({"alert": [stamped]})) == {"alerted": 1}
        batch = json.dumps({"alert": [good] * 40})
        replies = []
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(100):
                ws.send(batch)
                replies.append(json.loads(ws.recv(timeout=10)))
        assert closed.value.rcvd.code == 1008
    assert any("too many alerts" in r.get("error", "") for r in replies if isinstance(r, dict))
    counts = figures(broadcaster.info["metrics_port"])
    assert counts["stream_alerts_refused_unknown_device_total"] == 1
    assert counts["stream_alerts_refused_not_subscribed_total"] == 1
    assert counts["stream_alerts_refused_future_total"] == 1
    assert counts["stream_alerts_refused_invalid_total"] == 1
    assert counts["stream_alerts_refused_rate_total"] >= 40
    assert counts["stream_alert_floods_total"] == 1
    assert counts["stream_bad_client_messages_total"] >= 1
    accepted = counts["stream_alerts_accepted_total"]
    wait_until(lambda: figures(live.info["metrics_port"])["stream_alerts_received_total"]
               == accepted, timeout=10)
    wait_until(lambda: len(watched) > 40, timeout=10)  # and it goes on
    stop.set()
    watcher.join(15)
    assert len(watched) > 20 and watched == list(range(watched[0], watched[0] + len(watched)))
    report_path = pipeline.cwd / "out" / "report.json"
    assert not report_path.exists()
    live.popen.send_signal(signal.SIGUSR1)  # the report on demand, the scorer going on
    wait_until(report_path.exists, timeout=20)
    assert json.loads(report_path.read_text())["detectors"]["bad"]["alerts"]["received"] == accepted
    assert live.popen.poll() is None
    assert live.stop(timeout=20)[0] == 0
    report = json.loads(report_path.read_text())
    assert report["detectors"]["bad"]["alerts"]["received"] == accepted
    # the timestamp names the very sample the seq did: one distinct alert in all
    assert report["detectors"]["bad"]["alerts"]["repeats"] == accepted - 1


def test_several_broadcasters_and_detectors(pipeline: Pipeline):
    """Two broadcasters feed one scorer; each detector is scored under its own name."""
    alerts = f"ipc://{pipeline.cwd}/alerts.sock"
    live = scorer(pipeline, alerts)
    pipeline.producer("--rate", "10", "--devices", "2")
    urls = []
    for _ in range(2):
        pipeline.broadcaster("--zmq-alerts", alerts)
        urls.append(pipeline.ws_url)
    for url, name, count in ((urls[0], "first", 3), (urls[1], "second", 2)):
        with connect(f"{url}/?labels=0&detector={name}", open_timeout=10, max_queue=None) as ws:
            sample = json.loads(ws.recv(timeout=10))
            while sample["seq"] < count:  # the alerts name it and the samples before it
                sample = json.loads(ws.recv(timeout=10))
            batch = [{"device": sample["device"], "seq": sample["seq"] - i} for i in range(count)]
            ws.send(json.dumps({"alert": batch}))
            while "alerted" not in (reply := json.loads(ws.recv(timeout=10))):
                assert "error" not in reply, reply
            assert reply == {"alerted": count}
    wait_until(lambda: figures(live.info["metrics_port"])["stream_alerts_received_total"] == 5,
               timeout=10)
    assert live.stop(timeout=20)[0] == 0
    report = json.loads((pipeline.cwd / "out" / "report.json").read_text())
    assert {n: d["alerts"]["received"] for n, d in report["detectors"].items()} == {
        "first": 3, "second": 2,
    }
    assert report["run"]["alerts_lost"] == 0
