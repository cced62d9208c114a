"""streamsim.score: the scorer's offline report from DataFrames, called from Python: the
report `python -m scorer score` prints for the same data as files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import streamsim
from conftest import REPO

SETTINGS = dict(duration="1h", devices=2, seed=3, start="2025-08-04", anomaly_rate=6)


def test_a_perfect_and_a_silent_detector_score_as_they_must():
    """Alerts at every anomaly's first sample: recall 1, no false alert; none: recall 0; the
    report is the scorer's, as an object and a frame."""
    samples, windows = streamsim.generate(
        "2h", devices=2, seed=3, start="2025-08-04", anomaly_rate=6
    )
    labelled = samples[samples["anomaly_id"].notna()]
    firsts = labelled.groupby("anomaly_id").first()[["device", "seq"]].reset_index(drop=True)
    perfect = streamsim.score(firsts, windows, samples, detector="perfect", nab_probation=0)
    overall = perfect.figures["overall"]
    assert overall["recall"] == 1.0 and overall["alerts_false"] == 0
    assert "overall" in perfect.to_frame().index
    silent = streamsim.score([], windows, samples, nab_probation=0)
    assert silent.figures["overall"]["recall"] == 0


def test_score_is_the_report_of_the_command_line(tmp_path: Path):
    """Seeded random alerts scored from the frames of `generate` give, member for member,
    the JSON `python -m scorer score` prints for the CLI's backfill of the same settings."""
    samples, windows = streamsim.generate(**SETTINGS)
    rng = np.random.default_rng(11)
    picked = samples.iloc[np.sort(rng.choice(len(samples), 60, replace=False))]
    alerts = picked[["device", "seq"]].assign(
        device=picked["device"].astype(str), score=rng.random(60).round(3)
    )
    alerts.to_csv(tmp_path / "alerts.csv", index=False)
    run = [sys.executable, "-m"]
    options = ["--duration", "1h", "--devices", "2", "--seed", "3", "--start", "2025-08-04",
               "--anomaly-rate", "6"]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin"}
    subprocess.run([*run, "producer", "generate", *options, "--out", "train.csv"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    printed = subprocess.run(
        [*run, "scorer", "score", "--windows", "train.windows.csv", "--alerts", "alerts.csv",
         "--detector", "random", "--threshold", "0.5", "--json"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    report = streamsim.score(alerts, windows, samples, detector="random", threshold=0.5)
    cli = json.loads(printed)
    assert report.to_dict()["alerts"]["below_threshold"] > 0
    assert json.dumps(json.loads(report.to_json()), sort_keys=True) == json.dumps(
        cli, sort_keys=True
    )


def test_bad_settings_are_the_scorers_one_line_errors():
    """A setting the scorer refuses is its own message, as ValueError."""
    samples, windows = streamsim.generate("10m", seed=3, start="2025-08-04")
    with pytest.raises(ValueError, match="range bias"):
        streamsim.score([], windows, samples, range_bias="sideways")
