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
    rising = a * (a + 1) / 2
    falling = b * (length + 1) - ((half + b) * (half + b + 1) - half * (half + 1)) / 2
    return rising + falling


def _weight(lo, hi, start, length, bias) -> np.ndarray:
    """Bias weight of the positions of [lo, hi] inside a range starting at `start`."""
    return _prefix(hi - start + 1, length, bias) - _prefix(lo - start, length, bias)


SHIFT = 1 << 40  # a device's samples are keyed index * SHIFT + seq: devices end to end


def score(
    real: list[tuple[object, np.ndarray, np.ndarray, np.ndarray]],
    predicted: dict[object, np.ndarray],
    alpha: float = 0.0,
    bias: str = "flat",
    cardinality: str = "one",
) -> RangeScore:
    """`real`: per device (device, first seq, last seq, group of each real span), spans
    sorted and disjoint; `predicted`: per device, the sorted distinct alerted seqs.

    Devices are laid end to end (keys index * SHIFT + seq), so the work is a few array
    operations whatever the number of devices."""
    index = {d: i for i, d in enumerate(sorted({d for d, *_ in real} | set(predicted), key=str))}
    codes: dict[object, int] = {}
    los, his, gs = [], [], []
    for device, lo, hi, groups in sorted(real, key=lambda r: index[r[0]]):
        base = index[device] * SHIFT
        los.append(np.asarray(lo, np.int64) + base)
        his.append(np.asarray(hi, np.int64) + base)
        gs.append([codes.setdefault(g, len(codes)) for g in np.asarray(groups, object).tolist()])
    keys = [np.asarray(predicted[d], np.int64) + index[d] * SHIFT
            for d in sorted(predicted, key=lambda d: index[d])]
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    lo, hi, alerted = cat(los), cat(his), cat(keys)
    group = np.array([g for part in gs for g in part], np.int64)
    count_groups = len(codes)
    rl = hi - lo + 1
    group_max = np.bincount(group, weights=_weight(lo, hi, lo, rl, bias), minlength=count_groups)
    plo, phi = runs(alerted)
    pl = phi - plo + 1
    first = np.searchsorted(hi, plo, "left")
    last = np.searchsorted(lo, phi, "right")
    count = np.maximum(last - first, 0)
    p_idx = np.repeat(np.arange(len(plo)), count)
    r_idx = (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)) + np.repeat(
        first, count
    )
    a = np.maximum(plo[p_idx], lo[r_idx])
    b = np.minimum(phi[p_idx], hi[r_idx])
    span_hit = np.bincount(r_idx, weights=_weight(a, b, lo[r_idx], rl[r_idx], bias),
                           minlength=len(lo))
    group_hit = np.bincount(group, weights=span_hit, minlength=count_groups)
    overlaps = np.bincount(group, weights=np.bincount(r_idx, minlength=len(lo)),
                           minlength=count_groups)  # predicted ranges overlapping each group
    factor = np.where((overlaps <= 1) | (cardinality == "one"), 1.0, 1.0 / np.maximum(overlaps, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        overlap = np.where(group_max > 0, factor * group_hit / group_max, 0.0)
    recalls = alpha * (overlaps > 0) + (1 - alpha) * overlap
    covered = np.bincount(p_idx, weights=_weight(a, b, plo[p_idx], pl[p_idx], bias),
                          minlength=len(plo))
    share = covered / _weight(plo, phi, plo, pl, bias) if len(plo) else covered
    if cardinality == "reciprocal" and len(p_idx):
        pairs = np.unique(np.stack([p_idx, group[r_idx]]), axis=1)
        distinct = np.bincount(pairs[0], minlength=len(plo))
        share = np.where(distinct > 1, share / np.maximum(distinct, 1), share)
    recall = float(recalls.mean()) if count_groups else None
    precision = float(share.mean()) if len(share) else None
    if recall is None:
        f1 = None
    elif precision is None or precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return RangeScore(precision, recall, f1, int(len(share)))
