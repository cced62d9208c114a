"""streamsim.score: the scorer's offline report from DataFrames, called from Python. Runs
where the clone has the scorer (scorer/); skipped otherwise."""

from __future__ import annotations

import pytest

import streamsim
from conftest import REPO

pytestmark = pytest.mark.skipif(
    not (REPO / "scorer" / "offline.py").is_file(), reason="this clone has no scorer yet"
)


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


def test_bad_settings_are_the_scorers_one_line_errors():
    samples, windows = streamsim.generate("10m", seed=3, start="2025-08-04")
    with pytest.raises(ValueError, match="range bias"):
        streamsim.score([], windows, samples, range_bias="sideways")
