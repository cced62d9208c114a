"""The logger's seq tracker: its fast path for tick-major batches agrees with the general one."""

from __future__ import annotations

import numpy as np
import pytest

from common import schema
from delivery.seqs import SeqTracker


class SortingTracker(SeqTracker):
    """Always the general path."""

    def _ticks(self, rows):
        return None


def ticks(devices: list[str], first_seq: int, n: int, t0: int = 1_800_000_000_000):
    rows = schema.empty_rows(n * len(devices))
    rows["device"] = np.tile(np.array([d.encode() for d in devices]), n)
    rows["seq"] = np.repeat(np.arange(first_seq, first_seq + n), len(devices))
    rows["ts_ms"] = t0 + rows["seq"].astype(np.int64) * 10
    return schema.Batch(rows, schema.MILLISECONDS)


def feed(tracker: SeqTracker, batches: list[schema.Batch]):
    out = []
    for batch in batches:
        gaps = sorted(tracker.gaps(batch), key=lambda g: (g.device, g.first))  # order is free
        admitted = tracker.admit(batch)
        out.append((gaps, admitted.rows.tobytes()))
    return out, tracker.last


@pytest.mark.parametrize("seed", range(30))
def test_fast_path_agrees_with_sorting(seed: int) -> None:
    """Over random runs of batches with seq jumps, repeats, reordered or missing devices and
    shuffled rows, the tracker reports the same gaps, admits the same rows and ends with the same
    last seqs as the always-sorting general path."""
    rng = np.random.default_rng(seed)
    fleet = [f"host-{i:02d}" for i in range(int(rng.integers(1, 12)))]
    batches, seq = [], 0
    for _ in range(25):
        kind = rng.integers(0, 5)
        devices = list(fleet)
        if kind == 1:  # a jump: samples lost in between
            seq += int(rng.integers(2, 50))
        elif kind == 2:  # a repeat: duplicates of what was admitted
            seq = max(0, seq - int(rng.integers(1, 5)))
        elif kind == 3:  # another order, or only some devices
            devices = list(rng.permutation(fleet)[: int(rng.integers(1, len(fleet) + 1))])
        n = int(rng.integers(1, 6))
        batch = ticks(devices, seq, n)
        if kind == 4 and len(batch) > 2:  # not a grid at all
            batch = schema.Batch(batch.rows[rng.permutation(len(batch))], batch.precision)
        batches.append(batch)
        seq += n
    assert feed(SeqTracker(), batches) == feed(SortingTracker(), batches)


def test_a_grid_is_checked_and_admitted_without_sorting() -> None:
    """On tick-major batches the tracker reports each device's skipped seqs 3-6 as a gap, admits
    every newer row, remembers each device's last seq and timestamp, and of a batch that repeats one
    tick admits only the new tick."""
    tracker = SeqTracker()
    tracker.admit(ticks(["a", "b"], 0, 3))
    later = ticks(["a", "b"], 7, 2)
    assert [(g.device, g.first, g.last) for g in tracker.gaps(later)] == [("a", 3, 6), ("b", 3, 6)]
    assert len(tracker.admit(later)) == 4
    assert tracker.last == {b"a": (8, later.rows["ts_ms"][-1]), b"b": (8, later.rows["ts_ms"][-1])}
    again = tracker.admit(ticks(["a", "b"], 8, 2))  # one tick already written
    assert again.rows["seq"].tolist() == [9, 9]


def test_a_jump_inside_the_very_first_batch_is_a_gap() -> None:
    """A seq jump inside the first batch a fresh tracker sees (a producer withheld a row, and
    the logger's first receive held several messages) is reported, like any later one."""
    rows = ticks(["a"], 0, 5).rows
    first = schema.Batch(rows[[0, 1, 3, 4]], schema.MILLISECONDS)  # seq 2 never published
    for tracker in (SeqTracker(), SortingTracker()):
        assert [(g.device, g.first, g.last) for g in tracker.gaps(first)] == [("a", 2, 2)]
        assert len(tracker.admit(first)) == 4


@pytest.mark.parametrize("make", [SeqTracker, SortingTracker])
def test_forgotten_devices_are_met_anew_and_the_others_keep_their_place(make) -> None:
    """Forgetting some devices makes them unseen (their next seq is neither a jump nor a
    repeat), while the others still show a jump and drop repeats; forgetting all, all."""
    tracker = make()
    tracker.admit(ticks(["a", "b"], 0, 5))
    tracker.forget([b"a"])
    later = ticks(["a", "b"], 2, 5)
    assert tracker.unseen(later) == ["a"]
    assert tracker.gaps(later) == []
    admitted = tracker.admit(later).rows

    def seqs(device: bytes) -> list[int]:
        return [int(seq) for seq in admitted["seq"][admitted["device"] == device]]

    assert seqs(b"a") == [2, 3, 4, 5, 6]  # taken up where it is met again
    assert seqs(b"b") == [5, 6]  # 2-4 are repeats
    assert [g.device for g in tracker.gaps(ticks(["a", "b"], 9, 1))] == ["a", "b"]
    tracker.forget()
    assert sorted(tracker.unseen(ticks(["a", "b"], 0, 1))) == ["a", "b"]
