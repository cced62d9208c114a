"""Where each device's samples lie in seq and in time, kept as straight runs.

The scorer names a sample by seq or by timestamp (an alert may give either) without
keeping every timestamp: a device's samples are stored as segments of consecutive seqs
whose timestamps lie on a straight line within a millisecond (a steady rate). A producer
at a steady rate makes one segment per run; a rate change, a restart (a seq jump) or an
irregular replay starts another. The rule is applied sample by sample, so the segments
are the same however the samples were cut into batches: live or from a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TOLERANCE_MS = 1.0  # how far off the line a timestamp may be and still continue it


@dataclass
class Timeline:
    """One device's segments: seq0..seq1 (inclusive) from ts0 to ts1, in order."""

    seq0: np.ndarray
    ts0: np.ndarray
    seq1: np.ndarray
    ts1: np.ndarray

    @property
    def first_seq(self) -> int:
        return int(self.seq0[0])

    @property
    def last_seq(self) -> int:
        return int(self.seq1[-1])

    @property
    def first_ts(self) -> int:
        return int(self.ts0[0])

    @property
    def last_ts(self) -> int:
        return int(self.ts1[-1])

    @property
    def samples(self) -> int:
        return int((self.seq1 - self.seq0 + 1).sum())

    @property
    def hours(self) -> float:
        """How long the device was observed: its span, plus one sample period."""
        n = self.samples
        span = self.last_ts - self.first_ts
        return (span * n / (n - 1) if n > 1 else 0.0) / 3_600_000

    def has(self, seqs: np.ndarray) -> np.ndarray:
        """Whether each seq is one of the device's samples."""
        seqs = np.asarray(seqs, np.int64)
        seg = np.searchsorted(self.seq0, seqs, "right") - 1
        safe = np.maximum(seg, 0)
        return (seg >= 0) & (seqs <= self.seq1[safe])

    def ts_of(self, seqs: np.ndarray) -> np.ndarray:
        """The timestamp (ms) of each seq (which must be a sample: see `has`)."""
        seqs = np.asarray(seqs, np.int64)
        seg = np.maximum(np.searchsorted(self.seq0, seqs, "right") - 1, 0)
        return _at(seqs, self.seq0[seg], self.ts0[seg], self.seq1[seg], self.ts1[seg])

    def seq_at(self, ts: np.ndarray, side: str = "nearest") -> np.ndarray:
        """The sample at each time: `nearest`, the last at or before it (`floor`, -1 if
        none) or the first at or after it (`ceil`, -1 if none)."""
        ts = np.asarray(ts, np.int64)
        out = np.empty(len(ts), np.int64)
        seg = np.searchsorted(self.ts0, ts, "right") - 1
        before = seg < 0
        safe = np.maximum(seg, 0)
        seq0, ts0, seq1, ts1 = self.seq0[safe], self.ts0[safe], self.seq1[safe], self.ts1[safe]
        span = np.maximum(ts1 - ts0, 1)
        steps = seq1 - seq0
        where = (ts - ts0) * (steps / span)
        near = np.clip(np.rint(where), 0, steps).astype(np.int64)
        # the candidate's own time decides floor and ceil exactly
        cand = seq0 + near
        cand_ts = _at(cand, seq0, ts0, seq1, ts1)
        floor = np.where(cand_ts <= ts, cand, cand - 1)
        past = ts > ts1  # in a gap after this segment
        floor = np.where(past, seq1, floor)
        nxt = np.minimum(seg + 1, len(self.seq0) - 1)
        has_next = seg + 1 < len(self.seq0)
        ceil = np.where(cand_ts >= ts, cand, cand + 1)
        ceil = np.where(past, np.where(has_next, self.seq0[nxt], -1), ceil)
        if side == "floor":
            out[:] = floor
            out[before] = -1
        elif side == "ceil":
            out[:] = ceil
            out[before] = self.seq0[0]
        else:
            gap_choice = np.where(
                has_next & (self.ts0[nxt] - ts < ts - ts1), self.seq0[nxt], seq1
            )
            out[:] = np.where(past, gap_choice, cand)
            out[before] = self.seq0[0]
        return out


def _at(seqs, seq0, ts0, seq1, ts1) -> np.ndarray:
    steps = np.maximum(seq1 - seq0, 1)
    return ts0 + np.rint((seqs - seq0) * ((ts1 - ts0) / steps)).astype(np.int64)


@dataclass
class _Open:
    seq0: int
    ts0: int
    seq: int
    ts: int


@dataclass
class TimelineBuilder:
    """Builds every device's Timeline from its samples, given in seq order per device.

    Samples at or below a device's last seq are ignored (duplicates, late repeats).
    """

    closed: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)
    _names: list[str] = field(default_factory=list)
    _slot: dict[bytes, int] = field(default_factory=dict)
    _seq0: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _ts0: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _seq: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _ts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _layout: np.ndarray | None = None  # device column of the last batch, and its slots
    _layout_slots: np.ndarray | None = None

    def slots(self, devices: np.ndarray) -> np.ndarray:
        """A slot per row (new devices get one); a batch that repeats the last batch's
        device column (tick after tick) is recognised without looking names up."""
        layout = self._layout
        if layout is not None and len(devices) % len(layout) == 0 and len(layout):
            ticks = len(devices) // len(layout)
            words = np.ascontiguousarray(devices).view(np.uint64).reshape(ticks, len(layout), -1)
            mine = layout.view(np.uint64).reshape(1, len(layout), -1)
            if (words == mine).all():
                return np.tile(self._layout_slots, ticks)
        names, inverse = np.unique(devices, return_inverse=True)
        lookup = np.empty(len(names), np.int64)
        for i, name in enumerate(names.tolist()):
            slot = self._slot.get(name)
            if slot is None:
                slot = self._new(name)
            lookup[i] = slot
        slots = lookup[inverse]
        first = np.flatnonzero(devices == devices[0])
        period = int(first[1]) if len(first) > 1 else len(devices)
        if len(devices) and len(devices) % period == 0 and len(np.unique(slots[:period])) == period:
            ticks = len(devices) // period
            if (slots.reshape(ticks, period) == slots[:period]).all():
                self._layout = np.ascontiguousarray(devices[:period]).copy()
                self._layout_slots = slots[:period].copy()
        return slots

    def _new(self, name: bytes) -> int:
        slot = len(self._names)
        self._slot[name] = slot
        self._names.append(name.rstrip(b"\0").decode("utf-8", "replace"))
        if slot >= len(self._seq):
            grow = max(64, 2 * len(self._seq))
            self._seq0 = np.resize(self._seq0, grow)
            self._ts0 = np.resize(self._ts0, grow)
            self._seq = np.resize(self._seq, grow)
            self._ts = np.resize(self._ts, grow)
        self._seq[slot] = -1  # nothing yet
        return slot

    def add(self, devices: np.ndarray, seqs: np.ndarray, ts: np.ndarray) -> None:
        """Take samples (device ids as stored, seqs, timestamps in ms)."""
        if not len(devices):
            return
        slots = self.slots(devices)
        seqs = seqs.astype(np.int64, copy=False)
        ts = ts.astype(np.int64, copy=False)
        order = np.argsort(slots, kind="stable")
        s, q, t = slots[order], seqs[order], ts[order]
        starts = np.r_[True, s[1:] != s[:-1]]
        # previous sample of the same device: the row before, or the device's last one
        prev_q = np.empty_like(q)
        prev_t = np.empty_like(t)
        prev_q[1:], prev_t[1:] = q[:-1], t[:-1]
        prev_q[starts], prev_t[starts] = self._seq[s[starts]], self._ts[s[starts]]
        seq0, ts0 = self._seq0[s], self._ts0[s]
        fresh = prev_q < 0  # the device's first sample ever
        steps = prev_q - seq0
        with np.errstate(divide="ignore", invalid="ignore"):
            line = ts0 + (q - seq0) * ((prev_t - ts0) / steps)
        ok = (q == prev_q + 1) & (t > prev_t)
        ok &= (steps == 0) | (np.abs(t - line) <= TOLERANCE_MS)
        ok &= ~fresh
        group_end = np.r_[np.flatnonzero(starts)[1:], len(s)] - 1
        if ok.all():
            last = group_end
            self._seq[s[last]], self._ts[s[last]] = q[last], t[last]
            return
        group_start = np.flatnonzero(starts)
        for a, b in zip(group_start.tolist(), group_end.tolist(), strict=True):
            part = ok[a : b + 1]
            slot = int(s[a])
            if part.all():
                self._seq[slot], self._ts[slot] = q[b], t[b]
                continue
            first_bad = a + int(np.argmin(part))
            if first_bad > a:
                self._seq[slot], self._ts[slot] = q[first_bad - 1], t[first_bad - 1]
            for i in range(first_bad, b + 1):
                self._one(slot, int(q[i]), int(t[i]))

    def _one(self, slot: int, seq: int, ts: int) -> None:
        """The rule, for one sample (the batch path computes the very same)."""
        last, last_ts = int(self._seq[slot]), int(self._ts[slot])
        if last < 0:
            self._seq0[slot], self._ts0[slot], self._seq[slot], self._ts[slot] = seq, ts, seq, ts
            return
        if seq <= last:
            return
        seq0, ts0 = int(self._seq0[slot]), int(self._ts0[slot])
        steps = last - seq0
        fits = seq == last + 1 and ts > last_ts
        if fits and steps:
            line = ts0 + (seq - seq0) * ((last_ts - ts0) / steps)
            fits = abs(ts - line) <= TOLERANCE_MS
        if not fits:
            self.closed.setdefault(self._names[slot], []).append((seq0, ts0, last, last_ts))
            self._seq0[slot], self._ts0[slot] = seq, ts
        self._seq[slot], self._ts[slot] = seq, ts

    def timelines(self) -> dict[str, Timeline]:
        """Every device's timeline so far (the open segments included)."""
        out: dict[str, Timeline] = {}
        for slot, name in enumerate(self._names):
            if self._seq[slot] < 0:
                continue
            segs = [
                *self.closed.get(name, []),
                (int(self._seq0[slot]), int(self._ts0[slot]), int(self._seq[slot]),
                 int(self._ts[slot])),
            ]
            arr = np.array(segs, np.int64).reshape(-1, 4)
            out[name] = Timeline(*(arr[:, i].copy() for i in range(4)))
        return out
