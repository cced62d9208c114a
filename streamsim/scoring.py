"""`score`: a detector's alerts judged against the exact labels, offline, by the scorer
(`python -m scorer score`) called from Python: the same report, as an object and a frame."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from streamsim._isolated import project


def available() -> bool:
    """Whether this clone has the scorer (scorer/)."""
    try:
        project("scorer.offline")
    except ModuleNotFoundError:
        return False
    return True


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
    Bad input raises ValueError with the scorer's one-line message; a clone without the
    scorer, ImportError.
    """
    if not available():
        raise ImportError("scoring needs the scorer (scorer/ in the clone), which this one lacks")
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
