"""Which samples are new: the last seq delivered per device, duplicates dropped, jumps found.

A jump in a device's seq is a gap: the intake asks the producers to fill it (delivery.refill)
before delivering the later rows, and records what cannot be filled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from common import schema
from common.layout import Layout
from delivery.gaps import Gap


class SeqTracker:
    """The newest (seq, timestamp) delivered per device.

    Kept in arrays indexed by a slot per device, so a batch costs a few numpy passes
    whatever its number of devices. The producer's batches are tick-major (every device
    once per tick, in the same order, seq +1 per tick); such a batch is checked and
    admitted without sorting. Anything else (a refill, a replayed file, a restarted
    producer with other devices) takes the general path, which sorts by device and seq.
    """

    def __init__(self) -> None:
        self._slot: dict[bytes, int] = {}
        self._seq = np.full(64, -1, np.int64)  # by slot; -1: nothing written yet
        self._ts = np.zeros(64, np.int64)
        self._layout = Layout()  # the last tick layout seen, and its devices' slots
        self._layout_slots = np.zeros(0, np.int64)
        self._plan: tuple[np.ndarray, object] | None = None  # (rows, plan) of the last batch

    @classmethod
    def resuming(cls, last: dict[str, tuple[int, int]]) -> SeqTracker:
        """A tracker that knows what a destination already holds (a log's tail, say)."""
        tracker = cls()
        for device, (seq, ts_ms) in last.items():
            tracker.remember(device.encode(), seq, ts_ms)
        return tracker

    @property
    def last(self) -> dict[bytes, tuple[int, int]]:
        """Device -> (seq, timestamp ms) of its newest written sample."""
        return {d: (int(self._seq[i]), int(self._ts[i])) for d, i in self._slot.items()}

    def remember(self, device: bytes, seq: int, ts_ms: int) -> None:
        slot = self._slots(np.array([device], schema.DEVICE_DTYPE))[0]
        self._seq[slot], self._ts[slot] = seq, ts_ms
        self._plan = None

    def forget(self, devices: Iterable[bytes] | None = None) -> None:
        """Nothing delivered any more, of `devices` (None: of any): the destination starts
        afresh for a new series (whose seqs may be anywhere, even below the old ones), or
        these devices will be met anew (a consumer that stopped taking them for a while)."""
        if devices is None:
            self._seq[:] = -1
            self._ts[:] = 0
        else:
            slots = [self._slot[d] for d in devices if d in self._slot]
            self._seq[slots] = -1
            self._ts[slots] = 0
        self._plan = None

    def after(self) -> tuple[dict[str, int], int]:
        """What to ask the producer for: seqs after these, and devices newer than that time."""
        last = self.last
        after = {device.decode(): seq for device, (seq, _) in last.items()}
        newest = max((ts for _, ts in last.values()), default=0)
        return after, newest

    def gaps(self, batch: schema.Batch) -> list[Gap]:
        """Seq jumps in this batch relative to what was written, without writing anything."""
        rows = batch.rows
        if not len(rows):
            return []
        plan = self._planned(rows)  # also with nothing written yet: a jump within the batch
        if isinstance(plan, _Ticks):
            prev = self._seq[plan.slots]
            first = plan.seq[0]
            found = []
            for j in np.flatnonzero((prev >= 0) & (first > prev + 1)).tolist():
                slot = plan.slots[j]
                found.append(
                    Gap(
                        plan.names[j].decode(),
                        int(prev[j]) + 1,
                        int(first[j]) - 1,
                        int(self._ts[slot]),
                        int(plan.ts[0, j]),
                    )
                )
            return found
        names, slots, order, s_inv, s_seq, first_of_device, before = plan
        prev = self._seq[slots]
        ts = rows["ts_ms"][order]
        jumps = np.flatnonzero((before >= 0) & (s_seq > before + 1))
        found = []
        for i in jumps.tolist():
            device = s_inv[i]
            from_written = first_of_device[i] or before[i] == prev[device]
            found.append(
                Gap(
                    names[device].decode(),
                    int(before[i]) + 1,
                    int(s_seq[i]) - 1,
                    int(self._ts[slots[device]]) if from_written else int(ts[i - 1]),
                    int(ts[i]),
                )
            )
        return found

    def unseen(self, batch: schema.Batch) -> list[str]:
        """Devices of this batch of which nothing was written yet (first met mid-series?)."""
        rows = batch.rows
        if not len(rows):
            return []
        plan = self._planned(rows)
        if isinstance(plan, _Ticks):
            names, slots = plan.names, plan.slots
        else:
            names, slots = plan[0], plan[1]
        new = self._seq[slots] < 0
        if not new.any():
            return []
        return [schema.device_name(n) for n in names[new]]

    def admit(self, batch: schema.Batch) -> schema.Batch:
        """The rows not written yet (newer than each device's last seq), and remember them."""
        rows = batch.rows
        if not len(rows):
            return batch
        plan = self._planned(rows)
        self._plan = None  # what is written changes below
        if isinstance(plan, _Ticks):
            prev = self._seq[plan.slots]
            keep = (plan.seq > prev).ravel()
            newer = plan.seq[-1] > prev
            self._seq[plan.slots[newer]] = plan.seq[-1][newer]
            self._ts[plan.slots[newer]] = plan.ts[-1][newer]
        else:
            names, slots, order, s_inv, s_seq, first_of_device, before = plan
            keep_sorted = s_seq > before
            keep = np.empty(len(rows), bool)
            keep[order] = keep_sorted
            last_of_device = np.r_[s_inv[1:] != s_inv[:-1], True]
            ts = rows["ts_ms"][order]
            newest = np.flatnonzero(last_of_device & keep_sorted)
            self._seq[slots[s_inv[newest]]] = s_seq[newest]
            self._ts[slots[s_inv[newest]]] = ts[newest]
        if keep.all():
            return batch
        return batch.with_rows(rows[keep])

    def _planned(self, rows: np.ndarray):
        """How to look at these rows: as ticks, or sorted by device (computed once per batch,
        for gaps() then admit())."""
        if self._plan is not None and self._plan[0] is rows:
            return self._plan[1]
        plan = self._ticks(rows) or self._sorted(rows)
        self._plan = (rows, plan)
        return plan

    def _ticks(self, rows: np.ndarray) -> _Ticks | None:
        """The batch as a (ticks, devices) grid, if it is one: same device order every
        tick, no device twice in a tick, each device's seq +1 per tick."""
        n = len(rows)
        ticks = self._layout.ticks(rows["device"])  # the last layout again: one pass
        if ticks is None:
            layout = Layout.of(rows["device"])
            if layout is None:
                return None
            self._layout, self._layout_slots = layout, self._slots(layout.devices)
            ticks = n // len(layout)
        d = n // ticks
        seq = rows["seq"].astype(np.int64).reshape(ticks, d)
        if ticks > 1 and not (np.diff(seq, axis=0) == 1).all():
            return None
        names, slots = self._layout.devices, self._layout_slots
        return _Ticks(names, slots, seq, rows["ts_ms"].reshape(ticks, d))

    def _sorted(self, rows: np.ndarray):
        names, inverse = np.unique(rows["device"], return_inverse=True)
        slots = self._slots(names)
        prev = self._seq[slots]
        seq = rows["seq"].astype(np.int64)
        order = np.lexsort((seq, inverse))
        s_inv, s_seq = inverse[order], seq[order]
        first_of_device = np.r_[True, s_inv[1:] != s_inv[:-1]]
        previous = np.where(first_of_device, -1, np.r_[-1, s_seq[:-1]])
        before = np.maximum(prev[s_inv], previous)
        return names, slots, order, s_inv, s_seq, first_of_device, before

    def _slots(self, names: np.ndarray) -> np.ndarray:
        """Each device's slot, new ones added."""
        slot = self._slot
        out = np.empty(len(names), np.int64)
        for i, name in enumerate(names.tolist()):
            out[i] = slot.setdefault(name, len(slot))
        if len(slot) > len(self._seq):
            grow = max(len(slot), 2 * len(self._seq)) - len(self._seq)
            self._seq = np.r_[self._seq, np.full(grow, -1, np.int64)]
            self._ts = np.r_[self._ts, np.zeros(grow, np.int64)]
        return out


@dataclass(frozen=True)
class _Ticks:
    names: np.ndarray  # the devices of a tick, in order
    slots: np.ndarray  # their slots
    seq: np.ndarray  # (ticks, devices)
    ts: np.ndarray  # (ticks, devices)


def first_seqs(batches: list[schema.Batch]) -> dict[str, tuple[int, int]]:
    """Device -> (smallest seq, its timestamp ms) in these batches."""
    found: dict[str, tuple[int, int]] = {}
    for batch in batches:
        rows = batch.rows
        if not len(rows):
            continue
        order = np.lexsort((rows["seq"], rows["device"]))
        devices = rows["device"][order]
        picked = rows[order][np.r_[True, devices[1:] != devices[:-1]]]
        for device, seq, ts in zip(
            picked["device"].tolist(), picked["seq"].tolist(), picked["ts_ms"].tolist(), strict=True
        ):
            name = schema.device_name(device)
            if name not in found or seq < found[name][0]:
                found[name] = (seq, ts)
    return found
