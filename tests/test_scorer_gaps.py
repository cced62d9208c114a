"""The scorer takes its truth through delivery's intake, as the logger does: what it lacks
is named by reason in its report and /metrics, and ticks the producer skipped are not
counted as samples missed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from test_loss_visible import Foreign
from test_scorer_live import figures, scorer

from conftest import Pipeline, wait_until


def status(pipeline: Pipeline) -> dict:
    return json.loads(pipeline.ctl("status").stdout)


def gap_samples(counts: dict[str, float]) -> dict[str, float]:
    prefix = 'stream_gap_samples_total{reason="'
    return {k[len(prefix):-2]: v for k, v in counts.items() if k.startswith(prefix)}


def report(pipeline: Pipeline) -> dict:
    return json.loads((pipeline.cwd / "out" / "report.json").read_text())


def test_a_scorer_met_mid_series_and_a_pause(pipeline: Pipeline):
    """A scorer started after the producer's history lost the series' first seconds names
    them `not_held` (samples missed); ticks skipped while the producer is paused are
    `not_produced` (not missed); every seq of every device is scored or in a gap."""
    pipeline.producer("--rate", "20", "--devices", "2", "--history", "1")
    wait_until(lambda: status(pipeline)["last_seq"] >= 60, timeout=20, interval=0.3)
    live = scorer(pipeline, f"ipc://{pipeline.cwd}/alerts.sock", "--picture", "")
    port = live.info["metrics_port"]
    wait_until(lambda: figures(port)["stream_samples_scored_total"] >= 40, timeout=15)
    assert json.loads(pipeline.ctl("pause").stdout) == {"paused": True}
    time.sleep(1.0)  # the scenario: a second of pause, about 20 ticks skipped
    assert json.loads(pipeline.ctl("resume").stdout) == {"paused": False}
    wait_until(lambda: gap_samples(figures(port)).get("not_produced", 0) > 0, timeout=15)
    assert json.loads(pipeline.ctl("pause").stdout) == {"paused": True}
    last = status(pipeline)["last_seq"]  # every device's newest seq, until resumed

    def accounted() -> bool:
        counts = figures(port)
        return counts["stream_samples_scored_total"] + sum(gap_samples(counts).values()) == 2 * (
            last + 1
        )

    wait_until(accounted, timeout=15, message="not every seq was scored or named")
    assert live.stop(timeout=20)[0] == 0
    run = report(pipeline)["run"]
    gaps = run["gaps"]
    assert set(gaps) == {"not_held", "not_produced"}
    assert gaps["not_held"]["records"] == 2  # each device: seqs 0 up to what was held
    assert gaps["not_held"]["samples"] > 2 * 20  # the history held 1 s of more than 3 s
    assert gaps["not_produced"]["records"] == 2 and gaps["not_produced"]["samples"] >= 2 * 10
    assert run["samples_missed"] == gaps["not_held"]["samples"]
    assert run["samples"] + sum(g["samples"] for g in gaps.values()) == 2 * (last + 1)
    assert run["samples_caught_up"] > 0  # what the history held when the devices were met


def test_refused_messages_are_accounted(pipeline: Pipeline, tmp_path: Path):
    """Messages the scorer must refuse are `refused` gaps for a device it scores and for one
    it never saw, whose earlier seqs no producer could vouch for are `unavailable`; an
    unreadable message is counted as malformed; only valid samples are scored."""
    with Foreign(tmp_path) as foreign:
        live = scorer(
            pipeline, f"ipc://{pipeline.cwd}/alerts.sock", "--picture", "",
            "--zmq-pub", foreign.endpoint, "--zmq-catchup", foreign.nobody,
        )
        port = live.info["metrics_port"]
        wait_until(lambda: foreign.first() or figures(port)["stream_samples_scored_total"] >= 3,
                   timeout=10)
        foreign.then()
        wait_until(lambda: figures(port)["stream_samples_scored_total"] >= 5
                   and figures(port)["stream_malformed_messages_total"] == 3, timeout=20)
        assert live.stop(timeout=20)[0] == 0
    run = report(pipeline)["run"]
    assert run["samples"] == 5  # dev,1: 0, 1, 2, 5, 6
    assert run["gaps"] == {
        "refused": {"records": 2, "samples": 4},  # dev,1 3-4; the new device's 7-8
        "unavailable": {"records": 1, "samples": 7},  # the new device's 0-6
    }
    assert run["samples_missed"] == 11
