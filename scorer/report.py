"""The report: a detector's alerts scored against the truth, per anomaly kind and overall.

`evaluate(truth, alerts, settings)` is the one function behind the live scorer, the
offline `python -m scorer score` and the Python API, so the same facts give the same
report whichever way they came.

An incident counts once, at its root: its root and its symptoms (on other devices) form
a group, detected by an alert on any of them, its time to detect counted from the root's
first sample. Per kind, a group is of its root's kind; alerts that detect a group of
another kind, or fall in a planned event, are left out of that kind's figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from scorer import nab, ranges
from scorer.matching import Placed, device_slices, place, spans_by_device
from scorer.settings import Settings
from scorer.truth import Truth

FIGURES = (
    "events", "detected", "recall", "alerts_true", "alerts_false", "precision",
    "fp_per_device_hour", "ttd_s_median", "ttd_s_p90", "ttd_samples_median", "ttd_samples_p90",
    "event_precision", "event_f1", "range_precision", "range_recall", "range_f1",
    *(f"nab_{p}" for p in nab.PROFILES),
)


@dataclass
class Report:
    """One detector's scores: `figures` per view ("overall" and each kind), NAB's scores
    and counts per profile (overall), counts of the alerts, and one row per event group."""

    detector: str
    settings: Settings
    truth: dict
    alerts: dict
    figures: dict[str, dict]
    nab: dict[str, dict]
    groups: pd.DataFrame = field(repr=False)
    delivery: dict = field(default_factory=dict)  # live only: how late alerts arrived
    # for the picture: every event's span (device, kind, start, end, planned), and every
    # distinct alert (device, ts, verdict: true, false or planned)
    spans: pd.DataFrame | None = field(default=None, repr=False)
    marks: pd.DataFrame | None = field(default=None, repr=False)

    def to_dict(self, groups: bool = True) -> dict:
        body = {
            "detector": self.detector,
            "settings": self.settings.describe(),
            "truth": self.truth,
            "alerts": self.alerts,
            "overall": self.figures["overall"],
            "kinds": {k: v for k, v in self.figures.items() if k != "overall"},
            "nab": self.nab,
        }
        if self.delivery:
            body["delivery"] = self.delivery
        if groups:
            body["events"] = _records(self.groups)
        return body

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), default=_plain, **kwargs)

    def to_frame(self) -> pd.DataFrame:
        """One row per view (overall, then each kind), one column per figure."""
        return figures_frame(self.figures)


def figures_frame(figures: dict[str, dict]) -> pd.DataFrame:
    """Figures by view (a report's `figures`, or `{"overall": ..., **kinds}` of its JSON) as
    one row per view, one column per figure."""
    frame = pd.DataFrame.from_dict(figures, orient="index")
    frame.index.name = "kind"
    return frame


def _plain(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON: {value!r}")


def _records(frame: pd.DataFrame) -> list[dict]:
    out = []
    for row in frame.to_dict("records"):
        out.append({k: (None if isinstance(v, float) and np.isnan(v) else _plain_or(v))
                    for k, v in row.items()})
    return out


def _plain_or(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def _groups(truth: Truth) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(anomalies with their group, one row per group: kind, root device, start)."""
    anomalies = truth.anomalies.reset_index(drop=True).copy()
    if not len(anomalies):
        empty = pd.DataFrame(columns=["group", "kind", "device", "start", "members"])
        anomalies["group"] = pd.Series(dtype="uint64")
        return anomalies, empty
    anomalies["group"] = anomalies["root"].where(anomalies["root"] > 0, anomalies["id"])
    anomalies["is_root"] = anomalies["id"] == anomalies["group"]
    ordered = anomalies.sort_values(["group", "is_root", "start"], ascending=[True, False, True])
    head = ordered.groupby("group", sort=False).first()
    groups = pd.DataFrame(
        {
            "group": head.index.to_numpy(np.uint64),
            "kind": head["kind"].to_numpy(object),
            "device": head["device"].to_numpy(object),
            "start": head["start"].to_numpy(np.int64),
            "end": anomalies.groupby("group")["end"].max().reindex(head.index).to_numpy(np.int64),
            "members": anomalies.groupby("group").size().reindex(head.index).to_numpy(np.int64),
        }
    ).sort_values(["start", "group"], kind="stable").reset_index(drop=True)
    return anomalies, groups


def _percentile(values: np.ndarray, q: float) -> float | None:
    values = values[~np.isnan(values)]
    return float(np.percentile(values, q)) if len(values) else None


def evaluate(truth: Truth, alerts: pd.DataFrame, settings: Settings = Settings(),
             detector: str | None = None) -> Report:
    """Score one detector's alerts (see scorer.matching.alerts_frame) against the truth."""
    if detector is None:
        names = alerts["detector"].unique().tolist() if len(alerts) else []
        detector = names[0] if len(names) == 1 else ("detector" if not names else ",".join(names))
    placed = place(alerts, truth, settings)
    anomalies, groups = _groups(truth)
    group_of_alert = np.where(
        placed.event >= 0,
        anomalies["group"].to_numpy(np.uint64)[np.maximum(placed.event, 0)] if len(anomalies)
        else np.zeros(len(placed), np.uint64),
        np.uint64(0),
    ) if len(placed) else np.zeros(0, np.uint64)
    kind_of_group = dict(zip(groups["group"].tolist(), groups["kind"].tolist(), strict=True))
    if len(anomalies):
        member_kind = anomalies["group"].map(kind_of_group).to_numpy(object)
        alert_group_kind = np.where(placed.event >= 0, member_kind[np.maximum(placed.event, 0)],
                                    None)
    else:
        alert_group_kind = np.full(len(placed), None, object)
    false = (placed.event < 0) & np.array([p is None for p in placed.planned], bool)
    _detections(groups, placed, group_of_alert, truth)
    hours = sum(t.hours for t in truth.timelines.values())
    slices = device_slices(placed.device)
    false_alarms = sum(len(ranges.runs(placed.seq[a:b][false[a:b]])[0])
                       for a, b in slices.values())
    kinds = sorted(set(groups["kind"].tolist()))
    others = {p: _nab_series(truth, anomalies, alerts, settings, t)
              for p, t in settings.nab_thresholds if t != settings.threshold}
    figures = {"overall": _view(None, truth, anomalies, groups, placed, alert_group_kind, false,
                                hours, false_alarms, settings, slices, others)}
    for kind in kinds:
        figures[kind] = _view(kind, truth, anomalies, groups, placed, alert_group_kind, false,
                              hours, false_alarms, settings, slices)
    nab_overall = figures["overall"].pop("_nab")
    for kind in kinds:
        figures[kind].pop("_nab")
    guessed = (placed.event >= 0) & np.array([k is not None for k in placed.kind], bool)
    own_kind = anomalies["kind"].to_numpy(object)[np.maximum(placed.event, 0)] if len(anomalies) \
        else np.zeros(len(placed), object)
    correct = int((guessed & (placed.kind == own_kind)).sum()) if len(placed) else 0
    planned_counts: dict[str, int] = {}
    for p in placed.planned.tolist():
        if p is not None:
            planned_counts[p] = planned_counts.get(p, 0) + 1
    counts = dict(placed.counts)
    alert_counts = {
        **counts,
        "distinct": len(placed),
        "true": int((placed.event >= 0).sum()),
        "false": int(false.sum()),
        "false_alarms": false_alarms,
        "during_planned": planned_counts,
        "kind_guessed": int(guessed.sum()),
        "kind_correct": correct,
    }
    samples = sum(t.samples for t in truth.timelines.values())
    truth_counts = {
        "devices": len(truth.timelines),
        "samples": samples,
        "device_hours": hours,
        "events": int(len(anomalies)),
        "groups": int(len(groups)),
        "planned": {
            k: int(v) for k, v in truth.planned["kind"].value_counts().sort_index().items()
        },
    }
    delays = placed.delay_s
    delivery = {}
    if len(delays) and not np.isnan(delays).all():
        delivery = {"alert_delay_s_median": _percentile(delays, 50),
                    "alert_delay_s_p90": _percentile(delays, 90)}
    spans = truth.events[["device", "kind", "start", "end", "planned"]].copy()
    verdict = np.where(placed.event >= 0, "true", np.where(false, "false", "planned"))
    marks = pd.DataFrame({"device": placed.device, "ts": placed.ts, "verdict": verdict})
    return Report(detector, settings, truth_counts, alert_counts, figures, nab_overall,
                  groups, delivery, spans, marks)


def _detections(groups: pd.DataFrame, placed: Placed, group_of_alert: np.ndarray,
                truth: Truth) -> None:
    """Each group's first detection: when, on which device, how long after its start."""
    n = len(groups)
    groups["detected"] = np.zeros(n, bool)
    groups["alerts"] = np.zeros(n, np.int64)
    groups["ttd_s"] = np.full(n, np.nan)
    groups["ttd_samples"] = np.full(n, np.nan)
    groups["detected_on"] = np.full(n, None, object)
    if not n or not len(placed):
        return
    true = placed.event >= 0
    frame = pd.DataFrame({"group": group_of_alert[true], "ts": placed.ts[true],
                          "seq": placed.seq[true], "device": placed.device[true]})
    if not len(frame):
        return
    frame = frame.sort_values(["group", "ts", "device"], kind="stable")
    first = frame.groupby("group", sort=False).first()
    sizes = frame.groupby("group").size()
    where = groups.set_index("group")
    hit = groups["group"].isin(first.index).to_numpy()
    keys = groups["group"][hit]
    start = where.loc[keys, "start"].to_numpy(np.int64)
    alert_ts = first.loc[keys, "ts"].to_numpy(np.int64)
    alert_seq = first.loc[keys, "seq"].to_numpy(np.int64)
    alert_dev = first.loc[keys, "device"].to_numpy(object)
    samples = np.array([
        int(s) - int(truth.timelines[d].seq_at(np.array([t]), "ceil")[0])
        for d, s, t in zip(alert_dev.tolist(), alert_seq.tolist(), start.tolist(), strict=True)
    ], np.float64)
    groups.loc[hit, "detected"] = True
    groups.loc[hit, "alerts"] = sizes.loc[keys].to_numpy(np.int64)
    groups.loc[hit, "ttd_s"] = (alert_ts - start) / 1000
    groups.loc[hit, "ttd_samples"] = samples
    groups.loc[hit, "detected_on"] = alert_dev


def _nab_series(truth, anomalies, alerts, settings, threshold) -> list[nab.Series]:
    """NAB's files for a profile scored at a threshold of its own (overall view)."""
    placed = place(alerts, truth, replace(settings, threshold=threshold))
    scored = (placed.event >= 0) | np.array([p is None for p in placed.planned], bool)
    return _inputs(truth, anomalies, placed, scored, device_slices(placed.device))[2]


def _inputs(truth, members, placed, scored, slices):
    """Per device, the real ranges (spans, groups), the predicted samples and NAB's files."""
    real, predicted, series = [], {}, []
    spans = spans_by_device(members)
    groups = members["group"].to_numpy(object)
    empty = np.zeros(0, np.int64)
    for device, line in truth.timelines.items():
        rows, lo, hi, _, _ = spans.get(device, (empty,) * 5)
        g = groups[rows]
        a, b = slices.get(device, (0, 0))
        seqs = placed.seq[a:b][scored[a:b]]
        if len(lo):
            real.append((device, lo, hi, g))
        if len(seqs):
            predicted[device] = seqs
        series.append(nab.Series(line.last_seq - line.first_seq + 1, lo - line.first_seq,
                                 hi - line.first_seq, g, seqs - line.first_seq))
    return real, predicted, series


def _view(kind, truth, anomalies, groups, placed, alert_group_kind, false, hours, false_alarms,
          settings, slices, others=None) -> dict:
    mine = groups if kind is None else groups[groups["kind"] == kind]
    if kind is None:
        true = placed.event >= 0
    else:
        true = alert_group_kind == kind
    count = len(mine)
    detected = int(mine["detected"].sum())
    t, f = int(true.sum()), int(false.sum())
    recall = detected / count if count else None
    precision = t / (t + f) if t + f else None
    event_precision = detected / (detected + false_alarms) if detected + false_alarms else None
    event_f1 = None
    if recall is not None:
        p = event_precision or 0.0
        event_f1 = 2 * p * recall / (p + recall) if p + recall else 0.0
    scored = true | false  # what this view counts as predictions
    members = anomalies if kind is None else anomalies[anomalies["group"].isin(mine["group"])]
    real, predicted, series = _inputs(truth, members.reset_index(drop=True), placed, scored,
                                      slices)
    ranged = ranges.score(real, predicted, settings.range_alpha, settings.range_bias,
                          settings.range_cardinality)
    nab_scores = {}
    common = nab.score_all(series, settings.nab_probation)
    for profile in nab.PROFILES:
        own = (others or {}).get(profile)
        got = common[profile] if own is None else nab.score(own, profile, settings.nab_probation)
        nab_scores[profile] = {"threshold": settings.nab_threshold(profile), **got.describe()}
    ttd = mine["ttd_s"].to_numpy(np.float64)
    ttd_samples = mine["ttd_samples"].to_numpy(np.float64)
    out = {
        "events": count,
        "detected": detected,
        "recall": recall,
        "alerts_true": t,
        "alerts_false": f,
        "precision": precision,
        "fp_per_device_hour": f / hours if hours else None,
        "ttd_s_median": _percentile(ttd, 50),
        "ttd_s_p90": _percentile(ttd, 90),
        "ttd_samples_median": _percentile(ttd_samples, 50),
        "ttd_samples_p90": _percentile(ttd_samples, 90),
        "event_precision": event_precision,
        "event_f1": event_f1,
        "range_precision": ranged.precision,
        "range_recall": ranged.recall,
        "range_f1": ranged.f1,
        **{f"nab_{p}": v["normalized"] for p, v in nab_scores.items()},
        "_nab": nab_scores,
    }
    return out
