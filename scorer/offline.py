"""Scoring from files, and the same as plain Python functions for notebooks.

    from scorer.offline import score, score_files
    report = score(alerts, windows, series)          # pandas DataFrames in, a Report out
    report.to_frame()                                # one row per kind, one column per figure
    report = score_files("data/train.windows.csv", "alerts.csv")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import InputError
from scorer.files import feed, kinds, read_alerts, to_ms, truth_from_files
from scorer.matching import MISSING, alerts_frame
from scorer.report import Report, evaluate
from scorer.settings import Settings
from scorer.timeline import TimelineBuilder
from scorer.truth import Truth, events_frame


def score_files(
    windows: str | Path,
    alerts: str | Path,
    series: str | Path | None = None,
    settings: Settings = Settings(),
    detector: str | None = None,
) -> Report:
    """Score an alerts file against a windows file (ours, or NAB's combined_windows.json)
    and the series it labels (by default the log beside our windows file)."""
    windows, alerts = Path(windows), Path(alerts)
    series_path = Path(series) if series is not None else None
    if series_path is None and windows.suffix.lower() == ".json":
        series_path = alerts  # a NAB results file holds every row of its data file
    truth, nab_device = truth_from_files(windows, series_path)
    frame = read_alerts(alerts, nab_device=nab_device, detector=detector)
    if frame.attrs.get("nab_results") and settings.threshold is None:
        raise InputError("a NAB results file needs --threshold (its detector's, from NAB)")
    return evaluate(truth, frame, settings, detector)


def truth_from_frames(windows: pd.DataFrame, series: pd.DataFrame) -> Truth:
    """The truth of a windows table (our windows file's columns: anomaly_id, device, kind,
    start, end, samples, root) and of the series it labels (timestamp, device, seq)."""
    builder = TimelineBuilder()
    feed(builder, series["device"].astype(str).to_numpy(object),
          series["seq"].to_numpy(np.int64), to_ms(series["timestamp"], "series"))
    timelines = builder.timelines()
    rows = []
    start = to_ms(windows["start"], "windows") if len(windows) else np.zeros(0, np.int64)
    end = to_ms(windows["end"], "windows") if len(windows) else np.zeros(0, np.int64)
    for i, row in enumerate(windows.to_dict("records")):
        line = timelines[str(row["device"])]
        first, last = line.seq_at(np.array([start[i], end[i]]), "nearest").tolist()
        planned = row["kind"] in ("maintenance", "deploy", "load_test")
        root = row.get("root")
        rows.append({"id": int(row["anomaly_id"]), "device": str(row["device"]),
                     "kind": row["kind"], "root": 0 if planned else int(root)
                     if root is not None and pd.notna(root) else int(row["anomaly_id"]),
                     "start": int(start[i]), "end": int(end[i]), "first_seq": first,
                     "last_seq": last, "samples": int(row.get("samples", last - first + 1)),
                     "planned": planned})
    return Truth(timelines, events_frame(rows))


def score(alerts: pd.DataFrame, windows: pd.DataFrame, series: pd.DataFrame,
          settings: Settings = Settings(), detector: str | None = None) -> Report:
    """Score alerts (columns device and seq or timestamp; optional score, kind, detector)
    against a windows table and its series (see truth_from_frames)."""
    seq = alerts["seq"].fillna(-1).to_numpy(np.int64) if "seq" in alerts else None
    ts = None
    if "timestamp" in alerts:
        ts = np.full(len(alerts), MISSING, np.int64)
        given = alerts["timestamp"].notna().to_numpy()
        if given.any():
            ts[given] = to_ms(alerts["timestamp"][given], "alerts")
    frame = alerts_frame(
        alerts["device"].astype(str).to_numpy(object), seq=seq, ts=ts,
        score=alerts["score"].to_numpy(np.float64) if "score" in alerts else None,
        kind=kinds(alerts["kind"]) if "kind" in alerts else None,
        detector=alerts["detector"].astype(str).to_numpy(object) if "detector" in alerts
        else (detector or "detector"),
    )
    return evaluate(truth_from_frames(windows, series), frame, settings, detector)
