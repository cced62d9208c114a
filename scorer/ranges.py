"""Range-based precision and recall (Tatbul, Lee, Zdonik, Alam, Gottschlich: "Precision
and Recall for Time Series", NeurIPS 2018).

A real range is an anomaly (here: a group of spans, an incident's root and its symptoms,
on their devices); a predicted range is a run of consecutive alerted samples of a device.
Recall of a real range R: alpha * (detected at all) + (1 - alpha) * cardinality * the
bias-weighted share of R that predictions cover; precision of a predicted range P:
cardinality * the bias-weighted share of P that real ranges cover (no existence reward).
Both are averaged over the ranges. The bias weighs positions: flat, front (early
positions weigh more), back or middle; cardinality is 1, or 1/x for a range that
overlaps x ranges of the other side ("reciprocal").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RangeScore:
    precision: float | None  # None: nothing was predicted
    recall: float | None  # None: there is no real range
    f1: float | None
    predicted: int  # predicted ranges

    def describe(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1,
                "predicted_ranges": self.predicted}


def runs(seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximal runs of consecutive values among sorted distinct integers: (first, last)."""
    seqs = np.asarray(seqs, np.int64)
    if not len(seqs):
        return seqs, seqs
    breaks = np.flatnonzero(np.diff(seqs) != 1)
    return seqs[np.r_[0, breaks + 1]], seqs[np.r_[breaks, len(seqs) - 1]]


def _prefix(n: np.ndarray, length: np.ndarray, bias: str) -> np.ndarray:
    """Sum of the bias weights of positions 1..n of a range of `length` positions."""
    n = n.astype(np.float64)
    length = length.astype(np.float64)
    if bias == "flat":
        return n
    if bias == "back":
        return n * (n + 1) / 2
    if bias == "front":  # weight length - i + 1
        return n * (length + 1) - n * (n + 1) / 2
    half = np.floor(length / 2)  # middle: i up to length/2, then length - i + 1
    a = np.minimum(n, half)
    b = np.maximum(n - half, 0)
    return a * (a + 1) / 2 + (b * (length + 1) - ((half + b) * (half + b + 1) - half * (half + 1)) / 2)


def _weight(lo, hi, start, length, bias) -> np.ndarray:
    """Bias weight of the positions of [lo, hi] inside a range starting at `start`."""
    return _prefix(hi - start + 1, length, bias) - _prefix(lo - start, length, bias)


def score(
    real: list[tuple[object, np.ndarray, np.ndarray, np.ndarray]],
    predicted: dict[object, np.ndarray],
    alpha: float = 0.0,
    bias: str = "flat",
    cardinality: str = "one",
) -> RangeScore:
    """`real`: per device (device, first seq, last seq, group of each real span), spans
    sorted and disjoint; `predicted`: per device, the sorted distinct alerted seqs."""
    group_max: dict[object, float] = {}
    group_hit: dict[object, float] = {}
    group_preds: dict[object, set] = {}
    precisions: list[np.ndarray] = []
    devices = {d for d, *_ in real} | set(predicted)
    real_by = {d: (lo, hi, g) for d, lo, hi, g in real}
    for device in devices:
        lo, hi, groups = real_by.get(device, (np.zeros(0, np.int64),) * 2 + (np.zeros(0, object),))
        lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        groups = np.asarray(groups, object)
        rl = hi - lo + 1
        full = _weight(lo, hi, lo, rl, bias)
        for g, w in zip(groups.tolist(), full.tolist(), strict=True):
            group_max[g] = group_max.get(g, 0.0) + w
            group_hit.setdefault(g, 0.0)
            group_preds.setdefault(g, set())
        plo, phi = runs(predicted.get(device, np.zeros(0, np.int64)))
        if not len(plo):
            continue
        pl = phi - plo + 1
        # every (predicted, real) pair that overlaps
        first = np.searchsorted(hi, plo, "left")
        last = np.searchsorted(lo, phi, "right")
        count = np.maximum(last - first, 0)
        p_idx = np.repeat(np.arange(len(plo)), count)
        r_idx = (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)) + np.repeat(first, count)
        a = np.maximum(plo[p_idx], lo[r_idx])
        b = np.minimum(phi[p_idx], hi[r_idx])
        for g, p, w in zip(groups[r_idx].tolist(), p_idx.tolist(),
                           _weight(a, b, lo[r_idx], rl[r_idx], bias).tolist(), strict=True):
            group_hit[g] += w
            group_preds[g].add((device, p))
        # precision of each predicted range: its covered share, times its cardinality
        covered = np.zeros(len(plo))
        np.add.at(covered, p_idx, _weight(a, b, plo[p_idx], pl[p_idx], bias))
        share = covered / _weight(plo, phi, plo, pl, bias)
        if cardinality == "reciprocal":
            distinct = np.array([len(set(groups[r_idx[p_idx == p]].tolist())) for p in range(len(plo))])
            share = np.where(distinct > 1, share / np.maximum(distinct, 1), share)
        precisions.append(share)
    recalls = []
    for g, most in group_max.items():
        x = len(group_preds[g])
        factor = 1.0 if x <= 1 or cardinality == "one" else 1.0 / x
        overlap = factor * group_hit[g] / most if most else 0.0
        recalls.append(alpha * (1.0 if x else 0.0) + (1 - alpha) * overlap)
    recall = float(np.mean(recalls)) if recalls else None
    all_p = np.concatenate(precisions) if precisions else np.zeros(0)
    precision = float(all_p.mean()) if len(all_p) else None
    if recall is None:
        f1 = None
    elif precision is None or precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return RangeScore(precision, recall, f1, int(len(all_p)))
