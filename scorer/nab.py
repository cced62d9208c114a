"""The Numenta Anomaly Benchmark's score (Lavin and Ahmad, 2015), as NAB computes it.

Per data file (here: per device), rows are numbered from 0; a window is a span of rows
holding one anomaly. A detection inside a window earns the scaled sigmoid of its position
(the earlier, the more: 1 at the window's first row, 0 past its last), weighted by the
profile's tpWeight; only a window's best detection counts, and a window without one costs
fnWeight. A detection outside every window costs fpWeight times the sigmoid of its
distance past the previous window (a full fpWeight before any window). The first rows of
each file (15 %, at most 750) are probationary: not scored at all. The raw score is
normalised against the null detector (every window missed) and the perfect one (every
window detected at its first row): 100 * (raw - null) / (perfect - null).

Two generalisations leave NAB's own files scored exactly as NAB does: windows may form a
group (an incident's root and its symptoms on other devices) whose best detection in any
of its windows counts, once; and a one-row window, past which NAB divides by zero, has its
distance divided by 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Cost matrices of NAB's config/profiles.json: (tpWeight, fnWeight, fpWeight).
PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, 1.0, 0.11),
    "reward_low_FP_rate": (1.0, 1.0, 0.22),
    "reward_low_FN_rate": (1.0, 2.0, 0.11),
}
PROBATION_ROWS = 5000  # the probationary share applies to at most this many rows


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's reward by relative position: 2 * sigmoid(-5 x) - 1, and -1 past x = 3."""
    position = np.asarray(position, np.float64)
    with np.errstate(over="ignore"):
        value = 2 * (1 / (1 + np.exp(5 * position))) - 1.0
    return np.where(position > 3.0, -1.0, value)


MAX_TP = float(scaled_sigmoid(np.array([-1.0]))[0])


@dataclass
class Series:
    """One data file: its row count, its windows (first row, last row, group) in order,
    and the rows detected."""

    rows: int
    left: np.ndarray
    right: np.ndarray
    group: np.ndarray  # any hashable ids, one per window
    detected: np.ndarray  # sorted distinct row numbers


@dataclass
class NabScore:
    score: float  # raw, summed over the files
    normalized: float | None  # None when there is no window to detect
    tp: int
    fp: int
    fn: int
    tn: int
    total: int  # every row, the probationary ones too (NAB's published Total_Count)
    scored: int  # rows scored: tp + tn + fp + fn (what NAB's current code counts as total)
    windows: int  # groups of windows scored (the null and perfect scores count them)

    def describe(self) -> dict:
        return {
            "score": self.score, "normalized": self.normalized, "tp": self.tp, "fp": self.fp,
            "fn": self.fn, "tn": self.tn, "total": self.total, "scored": self.scored,
            "windows": self.windows,
        }


def probation(rows: int, share: float) -> float:
    """The probationary period in rows, as NAB computes it (a row i is scored if i >= it)."""
    return min(math.floor(share * rows), share * PROBATION_ROWS)


def score(series: list[Series], profile: str, share: float = 0.15) -> NabScore:
    """NAB's score of some files under one profile (see the module docstring)."""
    return score_all(series, share, (profile,))[profile]


def score_all(series: list[Series], share: float = 0.15,
              profiles: tuple[str, ...] = tuple(PROFILES)) -> dict[str, NabScore]:
    """NAB's scores under several profiles: positions and rewards are worked out once, each
    profile weighs them (the best detection of a window is the best under any weight).

    All files are laid end to end (a row's key is its file's offset plus its number), so
    the work is a few array operations whatever the number of files."""
    rows = np.array([s.rows for s in series], np.int64)
    offsets = np.r_[0, np.cumsum(rows)[:-1]] if len(rows) else rows
    first = np.array([min(r, math.ceil(probation(int(r), share))) for r in rows], np.int64)
    codes: dict[object, int] = {}
    left, right, group, wfile, det, dfile = [], [], [], [], [], []
    for i, s in enumerate(series):
        left.append(np.asarray(s.left, np.int64) + offsets[i])
        right.append(np.asarray(s.right, np.int64) + offsets[i])
        names = np.asarray(s.group, object).tolist()
        group.append([codes.setdefault(g, len(codes)) for g in names])
        wfile.append(np.full(len(s.left), i, np.int64))
        d = np.asarray(s.detected, np.int64)
        d = d[(d >= first[i]) & (d < s.rows)]
        det.append(d + offsets[i])
        dfile.append(np.full(len(d), i, np.int64))
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    left, right, wfile, d, dfile = cat(left), cat(right), cat(wfile), cat(det), cat(dfile)
    group = np.array([g for part in group for g in part], np.int64)
    width = right - left + 1
    scored_window = right - offsets[wfile] >= first[wfile] if len(wfile) else np.zeros(0, bool)
    groups = np.zeros(len(codes), bool)
    groups[group[scored_window]] = True
    best = np.full(len(codes), -np.inf)
    at = np.searchsorted(left, d, "right") - 1
    safe = np.maximum(at, 0)
    inside = (at >= 0) & (d <= right[safe]) if len(left) else np.zeros(len(d), bool)
    if inside.any():
        w = safe[inside]
        reward = scaled_sigmoid(-(right[w] - d[inside] + 1) / width[w])
        np.maximum.at(best, group[w], reward)
    out, out_file = d[~inside], dfile[~inside]
    fp_cost = 0.0
    if len(out):
        prev = np.searchsorted(right, out, "left") - 1 if len(right) else np.full(len(out), -1)
        safe_prev = np.maximum(prev, 0)
        has = (prev >= 0) & (wfile[safe_prev] == out_file) if len(right) else prev >= 0
        cost = np.full(len(out), -1.0)
        if has.any():
            p = prev[has]
            distance = np.abs(right[p] - out[has]) / np.maximum(width[p] - 1, 1).astype(float)
            cost[has] = scaled_sigmoid(distance)
        fp_cost = float(cost.sum())
    start = np.maximum(left - offsets[wfile], first[wfile]) + offsets[wfile] if len(left) else left
    window_rows = int(np.maximum(right - start + 1, 0).sum())
    tp, fp = int(inside.sum()), len(out)
    fn = window_rows - tp
    tn = int((rows - first).sum()) - window_rows - fp
    total = int(rows.sum())  # NAB publishes every row here, the probationary ones too
    rewards = best[groups]
    out_scores = {}
    for profile in profiles:
        tp_w, fn_w, fp_w = PROFILES[profile]
        parts = np.maximum(rewards * tp_w / MAX_TP, -fn_w)
        raw = fp_cost * fp_w + float(parts.sum())
        count = len(rewards)
        null, perfect = -fn_w * count, tp_w * count
        normalized = 100 * (raw - null) / (perfect - null) if count else None
        out_scores[profile] = NabScore(raw, normalized, tp, fp, fn, tn, total,
                                       tp + fp + fn + tn, count)
    return out_scores
