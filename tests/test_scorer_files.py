"""`python -m scorer score` on files: NAB's layout and call shape, our windows file with the
reference detectors' alerts files, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from scorer import nab


def scorer(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scorer", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def nab_files(cwd: Path) -> tuple[list[int], list[tuple[int, int]], np.ndarray]:
    """A NAB-shaped corpus of one file: data, labels, a detector's results."""
    rng = np.random.default_rng(3)
    n = 2000
    stamps = pd.date_range("2014-02-14 14:30:00", periods=n, freq="5min")
    (cwd / "data" / "realX").mkdir(parents=True)
    (cwd / "labels").mkdir()
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"),
                  "value": rng.random(n)}).to_csv(cwd / "data/realX/x.csv", index=False)
    windows = [(400, 499), (1200, 1260)]
    (cwd / "labels/combined_windows.json").write_text(json.dumps({"realX/x.csv": [
        [stamps[a].strftime("%Y-%m-%d %H:%M:%S.%f"), stamps[b].strftime("%Y-%m-%d %H:%M:%S.%f")]
        for a, b in windows]}))
    scores = rng.random(n) * 0.5
    hits = [410, 420, 1100, 1255, 1300, 1700, 50]
    scores[hits] = [0.9, 0.8, 0.95, 0.7, 0.9, 0.99, 0.99]
    pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": 0.0,
                  "anomaly_score": scores, "label": 0}).to_csv(cwd / "det_x.csv", index=False)
    return hits, windows, scores


def test_nab_call_shape(tmp_path: Path):
    """The documented call prints one JSON object whose `nab` maps each profile to NAB's
    raw score and row counts, as NAB's formula gives them."""
    hits, windows, scores = nab_files(tmp_path)
    run = scorer("score", "--windows", "labels/combined_windows.json", "--series",
                 "data/realX/x.csv", "--alerts", "det_x.csv",
                 "--threshold", "0.75", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    detected = np.flatnonzero(scores >= 0.75)
    expected = nab.score_all([nab.Series(2000, np.array([a for a, _ in windows]),
                                         np.array([b for _, b in windows]), np.arange(2),
                                         detected)])
    for profile in nab.PROFILES:
        got = report["nab"][profile]
        assert {"score", "tp", "fp", "fn", "tn"} <= set(got)
        assert got["score"] == pytest.approx(expected[profile].score)
        assert (got["tp"], got["fp"], got["fn"], got["tn"]) == (
            expected[profile].tp, expected[profile].fp, expected[profile].fn,
            expected[profile].tn)
    # probation: 15 % of 2000 rows = 300, so the alert at row 50 is not scored
    assert report["nab"]["standard"]["fp"] == 3 and report["nab"]["standard"]["tp"] == 2
    assert report["nab"]["standard"]["total"] == 2000
    assert report["nab"]["standard"]["scored"] == 1700


@pytest.mark.slow
def test_reference_detectors_offline(tmp_path: Path):
    """Both reference detectors run over a backfill and their alerts files are scored."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "producer", "generate", "--devices", "2",
                    "--duration", "20m", "--seed", "5", "--start", "2025-08-04",
                    "--anomaly-rate", "20", "--out", "train.csv"],
                   cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    for script in ("zscore_detector.py", "hst_detector.py"):
        subprocess.run([sys.executable, str(REPO / "clients" / script), "--csv", "train.csv",
                        "--out", f"{script}.csv"], cwd=tmp_path, env=env, check=True,
                       timeout=120)
        run = scorer("score", "--windows", "train.windows.csv", "--alerts", f"{script}.csv",
                     "--json", "--picture", f"{script}.png", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert report["detector"] == script.split("_")[0]
        assert report["truth"]["samples"] == 2400 and report["overall"]["events"] > 5
        assert report["overall"]["detected"] >= 1
        assert (tmp_path / f"{script}.png").stat().st_size > 10_000
    table = scorer("score", "--windows", "train.windows.csv", "--alerts",
                   "zscore_detector.py.csv", cwd=tmp_path)
    assert table.stdout.splitlines()[-1].startswith("overall")


def test_bad_input_is_one_line(tmp_path: Path):
    """Missing files, an alerts file without the columns it needs, a NAB results file
    without a threshold: exit status 2 and one line each."""
    nab_files(tmp_path)
    (tmp_path / "bad.csv").write_text("device,score\nx,1\n")
    cases = [
        (["--windows", "nope.windows.csv", "--alerts", "det_x.csv"], "give --series"),
        (["--windows", "labels/combined_windows.json", "--alerts", "missing.csv"], "missing.csv"),
        (["--windows", "labels/combined_windows.json", "--series", "data/realX/x.csv",
          "--alerts", "det_x.csv"], "needs --threshold"),
        (["--windows", "labels/combined_windows.json", "--series", "data/realX/x.csv",
          "--alerts", "bad.csv"], "needs a seq or a timestamp"),
    ]
    for args, message in cases:
        run = scorer("score", *args, cwd=tmp_path)
        assert run.returncode == 2, (args, run.stderr)
        assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_json_lines_alerts_equal_a_results_file(tmp_path: Path):
    """An alerts file of JSON lines (timestamp and score) scores as NAB's results file does."""
    nab_files(tmp_path)
    results = pd.read_csv(tmp_path / "det_x.csv")
    chosen = results[results["anomaly_score"] >= 0.75]
    with (tmp_path / "x.jsonl").open("w") as out:
        for row in chosen.itertuples():
            out.write(json.dumps({"timestamp": row.timestamp, "score": row.anomaly_score}) + "\n")
    args = ["--windows", "labels/combined_windows.json", "--series", "data/realX/x.csv"]
    lines = scorer("score", *args, "--alerts", "x.jsonl", "--json", cwd=tmp_path)
    nab_run = scorer("score", *args, "--alerts", "det_x.csv", "--threshold", "0.75", "--json",
                     cwd=tmp_path)
    assert lines.returncode == 0 and nab_run.returncode == 0, lines.stderr + nab_run.stderr
    got, want = json.loads(lines.stdout), json.loads(nab_run.stdout)
    for profile in nab.PROFILES:
        want["nab"][profile].pop("threshold")
        got["nab"][profile].pop("threshold")
    assert got["nab"] == want["nab"] and got["overall"] == want["overall"]
