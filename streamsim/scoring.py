"""Scoring from Python: `score`, a detector's alerts judged against the exact labels
offline by the scorer (`python -m scorer score`), and `LiveReport`, the live scorer's
report (`python -m scorer`, as `Pipeline(scorer=True).report()` reads it): the same
reports, as objects and frames."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from streamsim import options
from streamsim._isolated import project

# The scorer's settings as `score` and `Pipeline(scoring=...)` name them, and their options.
SETTINGS = {
    "early_s": "--early",
    "late_s": "--late",
    "threshold": "--threshold",
    "nab_probation": "--nab-probation",
    "range_alpha": "--range-alpha",
    "range_bias": "--range-bias",
    "range_cardinality": "--range-cardinality",
}


def score(
    alerts: pd.DataFrame | Iterable[Mapping[str, Any]],
    windows: pd.DataFrame,
    samples: pd.DataFrame,
    *,
    detector: str | None = None,
    early_s: float | None = None,
    late_s: float | None = None,
    threshold: float | None = None,
    nab_probation: float | None = None,
    range_alpha: float | None = None,
    range_bias: str | None = None,
    range_cardinality: str | None = None,
) -> Any:
    """The scorer's report on `alerts` against the events of `windows` over `samples` (both
    as `generate` or `read_log` give them).

    `alerts`: a DataFrame (or dicts) with `device` and `seq` or `timestamp`, optionally
    `score`, `kind` (a guess) and `detector`. The settings are the scorer's, None leaving its
    default: `early_s`/`late_s` how early or late an alert still detects an event,
    `threshold` below which scores are ignored, NAB's probation, range-based alpha, bias and
    cardinality. The report has `figures` per kind and overall, `nab` per profile,
    `to_frame()` (one row per kind, one column per figure), `to_dict()` and `to_json()`.
    Bad input raises ValueError with the scorer's one-line message.
    """
    offline = project("scorer.offline")
    given = {
        "early_s": early_s,
        "late_s": late_s,
        "threshold": threshold,
        "nab_probation": nab_probation,
        "range_alpha": range_alpha,
        "range_bias": range_bias,
        "range_cardinality": range_cardinality,
    }
    settings = project("scorer.settings").Settings(
        **{k: v for k, v in given.items() if v is not None}
    )
    frame = alerts if isinstance(alerts, pd.DataFrame) else pd.DataFrame(list(alerts))
    if frame.empty and "device" not in frame:  # no alerts at all: a silent detector
        frame = pd.DataFrame({"device": pd.Series(dtype=str), "seq": pd.Series(dtype="int64")})
    try:
        return offline.score(frame, windows, samples, settings, detector)
    except project("common.errors").StartupError as exc:
        raise ValueError(str(exc)) from None


def scorer_options(settings: Mapping[str, Any]) -> list[str]:
    """`python -m scorer` options for the settings `score` takes (None: the default);
    ValueError for a name that is not one."""
    unknown = [name for name in settings if name not in SETTINGS]
    if unknown:
        raise ValueError(
            f"unknown scoring setting {unknown[0]!r}; allowed: {', '.join(SETTINGS)}"
        )
    return [
        a
        for name, value in settings.items()
        if value is not None
        for a in (SETTINGS[name], options.text(value))
    ]


@dataclass(frozen=True)
class LiveReport:
    """The live scorer's report: `run`, what it took (`samples` scored, `gaps` by reason,
    `samples_missed`, the alerts received and lost: docs/scoring.md), and `detectors`, each
    detector's report by name, as `score(...).to_dict()` gives one."""

    run: dict[str, Any]
    detectors: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> LiveReport:
        """From the scorer's JSON report."""
        return cls(dict(body["run"]), dict(body["detectors"]))

    def to_frame(self) -> pd.DataFrame:
        """One row per detector and view (overall, then each kind), one column per figure;
        no rows before any detector sent an alert."""
        figures_frame = project("scorer.report").figures_frame
        frames = {
            name: figures_frame({"overall": report["overall"], **report["kinds"]})
            for name, report in self.detectors.items()
        }
        if not frames:
            index = pd.MultiIndex.from_tuples([], names=["detector", "kind"])
            return pd.DataFrame(index=index)
        return pd.concat(frames, names=["detector"])

    def to_dict(self) -> dict[str, Any]:
        """The JSON report, as the scorer wrote it."""
        return {"run": self.run, "detectors": self.detectors}
