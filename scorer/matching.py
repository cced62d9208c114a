"""Alerts placed on the truth: each named sample found, then judged true (it detects an
event), during a planned event, or false.

An alert names a device and a sample (seq, or timestamp: the nearest sample). Repeats of
one sample count once. An alert inside an anomaly's span, or within the tolerances before
its first or after its last sample, detects it (inside a span first, else the nearest
event in time); an alert that detects nothing but falls in a planned event (maintenance,
deploy, load test) is reported apart; any other is false.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scorer.settings import Settings
from scorer.truth import Truth

MISSING = np.iinfo(np.int64).min  # no timestamp / no reception time
ALERT_COLUMNS = ("detector", "device", "seq", "ts", "score", "kind", "received")


def alerts_frame(
    device, seq=None, ts=None, score=None, kind=None, detector="detector", received=None
) -> pd.DataFrame:
    """Alerts as the scorer's table: a sample named by seq (-1: not given) or ts (ms)."""
    n = len(device)
    full = lambda v, fill, dtype: (  # noqa: E731
        np.full(n, fill, dtype) if v is None else np.asarray(v).astype(dtype)
    )
    return pd.DataFrame(
        {
            "detector": full(detector, detector, object) if isinstance(detector, str)
            else np.asarray(detector, object),
            "device": np.asarray(device, object),
            "seq": full(seq, -1, np.int64),
            "ts": full(ts, MISSING, np.int64),
            "score": full(score, np.nan, np.float64),
            "kind": full(kind, None, object),
            "received": full(received, MISSING, np.int64),
        }
    )


@dataclass
class Placed:
    """Distinct alerted samples of one detector, on the truth."""

    device: np.ndarray  # object: device ids
    seq: np.ndarray
    ts: np.ndarray
    score: np.ndarray
    kind: np.ndarray  # object: the kind the detector guessed, or None
    delay_s: np.ndarray  # reception time minus sample time (NaN: not known)
    event: np.ndarray  # row of truth.anomalies it detects, or -1
    planned: np.ndarray  # object: the planned event's kind, or None
    counts: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seq)


def place(alerts: pd.DataFrame, truth: Truth, settings: Settings) -> Placed:
    """Find each alert's sample, drop repeats, and judge it."""
    counts = {"received": len(alerts), "below_threshold": 0, "unknown_device": 0,
              "not_a_sample": 0, "repeats": 0}
    if settings.threshold is not None and len(alerts):
        below = alerts["score"].to_numpy() < settings.threshold  # NaN (no score) passes
        counts["below_threshold"] = int(below.sum())
        alerts = alerts[~below]
    device = alerts["device"].to_numpy(object)
    order = np.argsort(device.astype(str), kind="stable")
    device = device[order]
    seq = alerts["seq"].to_numpy(np.int64)[order].copy()
    ts = alerts["ts"].to_numpy(np.int64)[order].copy()
    real = np.zeros(len(order), bool)
    for name, (a, b) in device_slices(device).items():
        line = truth.timelines.get(name)
        if line is None:
            counts["unknown_device"] += b - a
            continue
        part = seq[a:b]
        by_time = part < 0
        if by_time.any():
            given = ts[a:b][by_time]
            ok = given != MISSING
            found = line.seq_at(np.where(ok, given, 0), "nearest")
            part[by_time] = np.where(ok, found, -1)
        here = line.has(part) & (part >= 0)
        real[a:b] = here
        ts[a:b][here] = line.ts_of(part[here])
    counts["not_a_sample"] = int(len(order) - real.sum() - counts["unknown_device"])
    keep = order[real]
    frame = alerts.iloc[keep].copy() if len(keep) else alerts.iloc[0:0].copy()
    frame["seq"] = seq[real]
    frame["ts"] = ts[real]
    # by device and seq (input order among repeats), the first alert of a sample kept
    kept_devices = device[real]
    codes = np.cumsum(np.r_[False, kept_devices[1:] != kept_devices[:-1]])[: len(kept_devices)]
    again = np.lexsort((seq[real], codes))
    frame = frame.iloc[again]
    dup = np.r_[False, (codes[again][1:] == codes[again][:-1])
                & (seq[real][again][1:] == seq[real][again][:-1])][: len(again)]
    counts["repeats"] = int(dup.sum())
    frame = frame[~dup]
    received = frame["received"].to_numpy(np.int64)
    sample_ts = frame["ts"].to_numpy(np.int64)
    delay = np.where(received != MISSING, (received - sample_ts) / 1000, np.nan)
    placed = Placed(
        device=frame["device"].to_numpy(object),
        seq=frame["seq"].to_numpy(np.int64),
        ts=frame["ts"].to_numpy(np.int64),
        score=frame["score"].to_numpy(np.float64),
        kind=frame["kind"].to_numpy(object),
        delay_s=delay.astype(np.float64),
        event=np.full(len(frame), -1, np.int64),
        planned=np.full(len(frame), None, object),
        counts=counts,
    )
    _judge(placed, truth, settings)
    return placed


def spans_by_device(events: pd.DataFrame) -> dict[str, tuple[np.ndarray, ...]]:
    """Per device, its events in seq order: (row in `events`, first seq, last seq, start,
    end), in one sort rather than one pandas operation per device."""
    if not len(events):
        return {}
    rows = np.arange(len(events))
    device = events["device"].to_numpy(object)
    lo = events["first_seq"].to_numpy(np.int64)
    order = np.lexsort((lo, device.astype(str)))
    device = device[order]
    cuts = np.flatnonzero(np.r_[True, device[1:] != device[:-1], True])
    columns = (rows[order], lo[order], events["last_seq"].to_numpy(np.int64)[order],
               events["start"].to_numpy(np.int64)[order], events["end"].to_numpy(np.int64)[order])
    return {device[a]: tuple(c[a:b] for c in columns)
            for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True)}


def device_slices(devices: np.ndarray) -> dict[str, tuple[int, int]]:
    """Where each device's run lies in an array sorted by device."""
    if not len(devices):
        return {}
    cuts = np.flatnonzero(np.r_[True, devices[1:] != devices[:-1], True])
    return {devices[a]: (a, b) for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True)}


def _judge(placed: Placed, truth: Truth, settings: Settings) -> None:
    anomalies = truth.anomalies.reset_index(drop=True)
    planned = truth.planned
    early, late = settings.early_s * 1000, settings.late_s * 1000
    by_device = spans_by_device(anomalies)
    planned_by_device = spans_by_device(planned)
    devices = placed.device
    if not len(devices):
        return
    bounds = np.flatnonzero(np.r_[True, devices[1:] != devices[:-1], True])
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        device = devices[a]
        seq, ts = placed.seq[a:b], placed.ts[a:b]
        events = by_device.get(device)
        matched = np.full(b - a, -1, np.int64)
        if events is not None:
            index, lo, hi, start, end = events
            at = np.searchsorted(lo, seq, "right") - 1
            safe = np.maximum(at, 0)
            inside = (at >= 0) & (seq <= hi[safe])
            matched[inside] = index[safe[inside]]
            # outside every span: the nearest event within the tolerances
            after = np.minimum(at + 1, len(lo) - 1)
            gap_before = np.where(at >= 0, ts - end[safe], np.inf)  # after the earlier event
            gap_after = np.where(at + 1 < len(lo), start[after] - ts, np.inf)  # before the next
            late_ok = (~inside) & (at >= 0) & (gap_before > 0) & (gap_before <= late)
            early_ok = (~inside) & (at + 1 < len(lo)) & (gap_after > 0) & (gap_after <= early)
            pick_next = early_ok & (~late_ok | (gap_after <= gap_before))
            pick_prev = late_ok & ~pick_next
            matched[pick_next] = index[after[pick_next]]
            matched[pick_prev] = index[safe[pick_prev]]
        placed.event[a:b] = matched
        spans = planned_by_device.get(device)
        if spans is not None:
            index, lo, hi, _, _ = spans
            kinds = planned["kind"].to_numpy(object)[index]
            at = np.searchsorted(lo, seq, "right") - 1
            safe = np.maximum(at, 0)
            inside = (at >= 0) & (seq <= hi[safe]) & (matched < 0)
            placed.planned[a:b][inside] = kinds[safe[inside]]
