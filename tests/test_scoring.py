"""The scoring math on hand-made truths: perfect, silent and random detectors, NAB's
formula, range-based precision and recall, tolerances, planned events and incidents."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from common import schema
from scorer import nab, ranges
from scorer.matching import alerts_frame
from scorer.offline import score
from scorer.report import evaluate
from scorer.settings import Settings
from scorer.timeline import TimelineBuilder
from scorer.truth import TruthTracker

T0 = 1_754_265_600_000
KINDS = {k: i + 1 for i, k in enumerate(schema.ANOMALY_KINDS)}
EVENTS = {k: i + 1 for i, k in enumerate(schema.EVENT_KINDS)}


def stream(devices: int, ticks: int, events: list[tuple], period_ms: int = 1000):
    """Tick-major rows; events: (device index, first tick, last tick, kind, id, root)."""
    rows = schema.empty_rows(devices * ticks)
    rows["device"] = np.tile([f"d{i}".encode() for i in range(devices)], ticks)
    tick = np.repeat(np.arange(ticks), devices)
    rows["seq"] = tick
    rows["ts_ms"] = T0 + tick * period_ms
    dev = np.tile(np.arange(devices), ticks)
    for d, a, b, kind, event_id, root in events:
        sel = (dev == d) & (tick >= a) & (tick <= b)
        if kind in EVENTS:
            rows["event"][sel] = EVENTS[kind]
        else:
            rows["anomaly"][sel] = KINDS[kind]
            rows["anomaly_id"][sel] = event_id
            rows["anomaly_root"][sel] = root
    return rows


def truth_of(rows, batch: int = 7):
    tracker = TruthTracker()
    for i in range(0, len(rows), batch):
        tracker.add(schema.Batch(rows[i : i + batch]))
    return tracker.truth()


EVENT_LIST = [
    (0, 40, 49, "spike", 1, 1),
    (1, 60, 89, "drift", 2, 2),
    (0, 120, 139, "incident", 3, 3),
    (1, 125, 150, "level_shift", 4, 3),  # a symptom of incident 3, on another device
    (2, 160, 170, "dip", 5, 5),
    (2, 100, 110, "deploy", 0, 0),
]


@pytest.fixture(scope="module")
def truth():
    return truth_of(stream(3, 200, EVENT_LIST))


def test_truth_tracks_events_and_timelines(truth):
    """Events, their seq bounds and each device's single segment come out of the samples."""
    events = truth.events.set_index("id")
    assert events.loc[4, ["first_seq", "last_seq", "root"]].tolist() == [125, 150, 3]
    assert len(truth.planned) == 1 and truth.planned.iloc[0]["kind"] == "deploy"
    line = truth.timelines["d1"]
    assert (line.first_seq, line.last_seq, len(line.seq0)) == (0, 199, 1)


def test_perfect_detector(truth):
    """Alerts at every event's first sample: recall 1, no false alerts, NAB 100."""
    anomalies = truth.anomalies
    alerts = alerts_frame(anomalies["device"].to_numpy(object), seq=anomalies["first_seq"])
    report = evaluate(truth, alerts, Settings(nab_probation=0))
    overall = report.figures["overall"]
    assert overall["events"] == 4  # the incident counts once
    assert overall["recall"] == 1.0 and overall["alerts_false"] == 0
    assert overall["precision"] == 1.0 and overall["fp_per_device_hour"] == 0
    assert overall["ttd_s_median"] == 0.0
    for profile in nab.PROFILES:
        assert report.nab[profile]["normalized"] == pytest.approx(100.0)
    assert report.figures["incident"]["events"] == 1
    assert report.figures["incident"]["recall"] == 1.0


def test_silent_detector(truth):
    """No alerts: recall 0, NAB 0 after normalisation, nothing counted as an alert."""
    report = evaluate(truth, alerts_frame([]), Settings(nab_probation=0))
    overall = report.figures["overall"]
    assert overall["recall"] == 0 and overall["detected"] == 0
    assert overall["precision"] is None and overall["range_recall"] == 0
    for profile in nab.PROFILES:
        assert report.nab[profile]["normalized"] == pytest.approx(0.0)
        assert report.nab[profile]["score"] == pytest.approx(-nab.PROFILES[profile][1] * 4)


def test_incident_counts_once_at_its_root(truth):
    """An alert on a symptom detects the incident, timed from the root's first sample."""
    alerts = alerts_frame(["d1"], seq=[130])
    report = evaluate(truth, alerts, Settings(nab_probation=0))
    row = report.groups.set_index("group").loc[3]
    assert bool(row["detected"]) and row["ttd_s"] == 10.0 and row["ttd_samples"] == 10
    assert report.figures["incident"]["recall"] == 1.0
    assert report.figures["overall"]["detected"] == 1


def test_tolerances_and_planned_events(truth):
    """An alert just after an event detects it within --late, a planned event's alert is
    reported apart, any other is false."""
    alerts = alerts_frame(["d0", "d0", "d2", "d2"], seq=[52, 60, 105, 20])
    report = evaluate(truth, alerts, Settings(late_s=3, nab_probation=0))
    assert report.alerts["true"] == 1 and report.alerts["false"] == 2
    assert report.alerts["during_planned"] == {"deploy": 1}
    tight = evaluate(truth, alerts, Settings(late_s=2, nab_probation=0))
    assert tight.alerts["true"] == 0 and tight.alerts["false"] == 3
    early = evaluate(truth, alerts_frame(["d0"], seq=[37]), Settings(early_s=3, nab_probation=0))
    assert early.alerts["true"] == 1
    assert early.groups.set_index("group").loc[1, "ttd_s"] == -3.0


def test_alerts_by_timestamp_and_repeats(truth):
    """A timestamp names the nearest sample; repeats and samples that do not exist count
    apart."""
    alerts = alerts_frame(["d0", "d0", "d0", "zz"], seq=[-1, 41, 5000, 3],
                          ts=[T0 + 41_400, -(2**63), -(2**63), -(2**63)])
    report = evaluate(truth, alerts, Settings(nab_probation=0))
    counts = report.alerts
    assert (counts["repeats"], counts["not_a_sample"], counts["unknown_device"]) == (1, 1, 1)
    assert counts["true"] == 1


def _nab_reference(n, windows, detected, weights, probation_share):
    """NAB's published scoring, row by row as its Sweeper does (one file)."""
    tp_w, fn_w, fp_w = weights

    def scaled(x):
        return -1.0 if x > 3.0 else 2 * (1 / (1 + math.exp(5 * x))) - 1.0

    probation = min(math.floor(probation_share * n), probation_share * 5000)
    max_tp = scaled(-1.0)
    parts = {}
    fp_sum = 0.0
    prev_right = prev_width = None
    current = None
    counts = dict(tp=0, fp=0, fn=0, tn=0)
    for i in range(n):
        for w, (a, b) in enumerate(windows):
            if i == a:
                current = (w, a, b)
        inside = current is not None
        if inside:
            w, a, b = current
            sweep = scaled(-(b - i + 1) / (b - a + 1)) * tp_w / max_tp
        elif prev_right is None:
            sweep = -1.0 * fp_w
        else:
            sweep = scaled(abs(prev_right - i) / (prev_width - 1)) * fp_w
        if i >= probation:
            if inside:
                parts.setdefault(w, -fn_w)
            hit = i in detected
            key = ("tp" if hit else "fn") if inside else ("fp" if hit else "tn")
            counts[key] += 1
            if hit and inside:
                parts[w] = max(parts[w], sweep)
            elif hit:
                fp_sum += sweep
        if inside and i == current[2]:
            prev_right, prev_width, current = i, current[2] - current[1] + 1, None
    return fp_sum + sum(parts.values()), counts, len(parts)


@pytest.mark.parametrize("profile", list(nab.PROFILES))
@pytest.mark.parametrize("share", [0.0, 0.15])
def test_nab_matches_its_published_formula(profile, share):
    """Hand-made windows and detections: the raw score and row counts of NAB's formula."""
    rng = np.random.default_rng(7)
    n = 600
    windows = [(100, 139), (300, 301), (450, 520)]
    detected = sorted({*rng.integers(0, n, 25).tolist(), 100, 120, 139, 140, 302, 305, 521})
    expected, counts, groups = _nab_reference(n, windows, set(detected), nab.PROFILES[profile],
                                              share)
    got = nab.score([nab.Series(n, np.array([w[0] for w in windows]),
                                np.array([w[1] for w in windows]), np.arange(3),
                                np.array(detected))], profile, share)
    assert got.score == pytest.approx(expected, abs=1e-12)
    assert (got.tp, got.fp, got.fn, got.tn) == tuple(counts[k] for k in ("tp", "fp", "fn", "tn"))
    assert got.windows == groups and got.total == n


def _range_reference(real, predicted, alpha, bias, cardinality):
    """Tatbul et al.'s definitions, position by position (one device, one range a group)."""

    def delta(i, length):
        return {"flat": 1, "front": length - i + 1, "back": i,
                "middle": i if i <= length / 2 else length - i + 1}[bias]

    def omega(rng, overlap):
        length = rng[1] - rng[0] + 1
        total = sum(delta(i, length) for i in range(1, length + 1))
        mine = sum(delta(i, length) for i in range(1, length + 1) if rng[0] + i - 1 in overlap)
        return mine / total

    def cover(a, b):
        return set(range(max(a[0], b[0]), min(a[1], b[1]) + 1))

    def factor(x):
        return 1.0 if x <= 1 or cardinality == "one" else 1.0 / x

    recalls = []
    for r in real:
        hits = [p for p in predicted if cover(r, p)]
        overlap = sum(omega(r, cover(r, p)) for p in hits)
        recalls.append(alpha * (1.0 if hits else 0.0) + (1 - alpha) * factor(len(hits)) * overlap)
    precisions = []
    for p in predicted:
        hits = [r for r in real if cover(r, p)]
        precisions.append(factor(len(hits)) * sum(omega(p, cover(r, p)) for r in hits))
    return np.mean(precisions), np.mean(recalls)


@pytest.mark.parametrize("bias", ["flat", "front", "back", "middle"])
@pytest.mark.parametrize("cardinality", ["one", "reciprocal"])
def test_range_based_matches_the_definitions(bias, cardinality):
    """Range-based precision and recall against a position-by-position computation."""
    real = [(10, 29), (50, 52), (80, 120)]
    alerted = [12, 13, 14, 20, 28, 29, 30, 31, 45, 51, 85, 86, 90, 100, 101, 102, 119, 130]
    lo, hi = ranges.runs(np.array(alerted))
    predicted = list(zip(lo.tolist(), hi.tolist(), strict=True))
    want_p, want_r = _range_reference(real, predicted, 0.3, bias, cardinality)
    got = ranges.score([("d", np.array([a for a, _ in real]), np.array([b for _, b in real]),
                         np.array([0, 1, 2], object))], {"d": np.array(alerted)}, 0.3, bias,
                       cardinality)
    assert got.precision == pytest.approx(want_p) and got.recall == pytest.approx(want_r)


def test_seeded_random_detector_equals_an_independent_computation(truth):
    """A seeded random detector's figures equal a direct computation from the labels."""
    rng = np.random.default_rng(42)
    devices = np.array(["d0", "d1", "d2"], object)[rng.integers(0, 3, 120)]
    seqs = rng.integers(0, 200, 120)
    report = evaluate(truth, alerts_frame(devices, seq=seqs), Settings(late_s=0, nab_probation=0))
    distinct = {(d, int(s)) for d, s in zip(devices.tolist(), seqs.tolist(), strict=True)}
    spans = [(f"d{d}", a, b, kind, root) for d, a, b, kind, _, root in EVENT_LIST
             if kind not in EVENTS]
    planned = [(f"d{d}", a, b) for d, a, b, kind, *_ in EVENT_LIST if kind in EVENTS]
    true = {x for x in distinct if any(x[0] == d and a <= x[1] <= b for d, a, b, *_ in spans)}
    during = {x for x in distinct - true if any(x[0] == d and a <= x[1] <= b
                                                 for d, a, b in planned)}
    false = distinct - true - during
    roots = {root for *_, root in spans}
    found = {root for d, a, b, _, root in spans if any(x[0] == d and a <= x[1] <= b for x in true)}
    overall = report.figures["overall"]
    assert overall["alerts_true"] == len(true) and overall["alerts_false"] == len(false)
    assert report.alerts["during_planned"] == ({"deploy": len(during)} if during else {})
    assert overall["recall"] == pytest.approx(len(found) / len(roots))
    assert overall["precision"] == pytest.approx(len(true) / (len(true) + len(false)))
    hours = 3 * 200 / 3600
    assert overall["fp_per_device_hour"] == pytest.approx(len(false) / hours)
    first_alert = {}
    for d, a, b, _, root in spans:
        for x in sorted(true):
            if x[0] == d and a <= x[1] <= b:
                first_alert[root] = min(first_alert.get(root, 10**9), x[1])
    root_start = {1: 40, 2: 60, 3: 120, 5: 160}
    ttd = sorted(first_alert[r] - root_start[r] for r in first_alert)
    assert overall["ttd_s_median"] == pytest.approx(float(np.median(ttd)))


def test_timeline_is_the_same_however_batched():
    """Irregular spacing, a rate change and a seq jump give the same segments whatever the
    batch boundaries, and map seq and time both ways."""
    seq = np.r_[np.arange(0, 50), np.arange(60, 90), np.arange(90, 120)]
    ts = np.r_[np.arange(0, 50) * 333 + np.arange(0, 50) // 3, 20_000 + np.arange(30) * 1000,
               50_000 + np.arange(30) * 100]
    devices = np.full(len(seq), b"x", schema.DEVICE_DTYPE)
    whole, pieces = TimelineBuilder(), TimelineBuilder()
    whole.add(devices, seq, ts)
    for i in range(0, len(seq), 7):
        pieces.add(devices[i : i + 7], seq[i : i + 7], ts[i : i + 7])
    a, b = whole.timelines()["x"], pieces.timelines()["x"]
    # 90 still lies on the line of 60..89 (1 s apart); 91 does not
    assert a.seq0.tolist() == b.seq0.tolist() == [0, 60, 91]
    assert a.samples == len(seq)
    assert a.ts_of(np.array([60, 95])).tolist() == [20_000, 50_500]
    assert a.seq_at(np.array([20_000, 50_500, 35_000]), "nearest").tolist() == [60, 95, 75]
    assert a.has(np.array([55, 60])).tolist() == [False, True]


def test_python_api_scores_data_frames(truth):
    """Data frames in (alerts, windows, series), a report with a frame out."""
    rows = stream(2, 100, [(0, 10, 19, "spike", 11, 11), (1, 50, 59, "dip", 12, 12)])
    series = pd.DataFrame({"timestamp": pd.to_datetime(rows["ts_ms"], unit="ms"),
                           "device": [d.decode() for d in rows["device"]], "seq": rows["seq"]})
    windows = pd.DataFrame({"anomaly_id": [11, 12], "device": ["d0", "d1"],
                            "kind": ["spike", "dip"],
                            "start": pd.to_datetime([T0 + 10_000, T0 + 50_000], unit="ms"),
                            "end": pd.to_datetime([T0 + 19_000, T0 + 59_000], unit="ms"),
                            "samples": [10, 10], "root": [11, 12]})
    alerts = pd.DataFrame({"device": ["d0", "d1"], "seq": [12, 99]})
    report = score(alerts, windows, series, Settings(nab_probation=0), detector="mine")
    frame = report.to_frame()
    assert frame.loc["overall", "recall"] == 0.5 and frame.loc["spike", "recall"] == 1.0
    assert report.to_dict()["detector"] == "mine"
