"""What the producer published lately, kept so that subscribers can recover what they missed.

Bounded by age and by bytes: the catch-up window is whichever is shorter. Small batches
are joined into blocks so that answering a request walks a few large arrays.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

import numpy as np

from common import schema
from common.layout import Layout
from delivery import protocol
from delivery.reasons import Reason

_BLOCK_ROWS = 10_000
_BLOCK_SECONDS = 0.5  # a block also closes after this long, so that age limits apply promptly


class History:
    """Recently published samples, oldest first."""

    def __init__(self, max_age_s: float, max_bytes: int) -> None:
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self._blocks: deque[tuple[float, schema.Batch]] = deque()  # (newest publish time, rows)
        self._open: list[schema.Batch] = []
        self._open_rows = 0
        self._open_since = 0.0
        self._bytes = 0
        self.run_first: dict[str, int] = {}  # first seq this run published, per device
        self._seen = np.array([], dtype=schema.DEVICE_DTYPE)
        self._noted = Layout()  # a tick layout whose devices are all noted
        self._blocks_layout = Layout()  # the layout of the blocks looked at last
        self.skipped: deque[tuple[int, int]] = deque(maxlen=1000)  # seq ranges never produced
        self.series_first: int | None = None  # first seq of the series this run continues
        self.series: dict | None = None  # what it publishes (producer.sources.series.identity)
        # Seqs a source refused to publish, with the reason, per device (bounded: the oldest go).
        self.withheld: dict[str, deque[tuple[int, int, str]]] = {}
        self.requests = 0

    def add(self, batch: schema.Batch, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._note_first_seqs(batch.rows)
        if self._open and (self._open[0].precision, self._open[0].decimals) != (
            batch.precision,
            batch.decimals,
        ):
            self._close_block(now)
        if not self._open:
            self._open_since = now
        self._open.append(batch)
        self._open_rows += len(batch)
        if self._open_rows >= _BLOCK_ROWS or now - self._open_since >= _BLOCK_SECONDS:
            self._close_block(now)
        self._evict(now)

    def _note_first_seqs(self, rows: np.ndarray) -> None:
        """Remember the first seq of devices not seen before (vectorized: no per-sample work)."""
        devices = rows["device"]
        if self._noted.ticks(devices) is not None:
            return  # the usual case: the devices of the ticks before, in the same order
        names, first = np.unique(devices, return_index=True)
        new = ~np.isin(names, self._seen)
        if new.any():
            for name, index in zip(names[new].tolist(), first[new].tolist(), strict=True):
                self.run_first[schema.device_name(name)] = int(rows["seq"][index])
            self._seen = np.union1d(self._seen, names[new])
        self._noted = Layout.of(devices) or self._noted

    @property
    def rows(self) -> int:
        return sum(len(b) for _, b in self._blocks) + self._open_rows

    def not_produced(self, first: int, last: int) -> None:
        """Seqs this run skipped (paused, or too far behind): no subscriber can get them."""
        self.skipped.append((first, last))

    def withhold(self, device: str, first: int, last: int, reason: Reason) -> None:
        """Seqs of `device` a source refused to publish (Reason.INVALID_INPUT), and why."""
        ranges = self.withheld.setdefault(device, deque(maxlen=1000))
        if ranges and ranges[-1][1] == first - 1 and ranges[-1][2] == reason:
            ranges[-1] = (ranges[-1][0], last, reason)
        else:
            ranges.append((first, last, reason))

    def end(self) -> protocol.End:
        """What closes every catch-up answer: what this history cannot send, and why."""
        return protocol.End(
            oldest=self.oldest(),
            run_first=self.run_first,
            skipped=list(self.skipped),
            series_first=self.series_first,
            withheld={d: list(r) for d, r in self.withheld.items()},
            series=self.series,
        )

    def _close_block(self, now: float) -> None:
        if not self._open:
            return
        block = schema.merge(self._open)[0]
        self._blocks.append((now, block))
        self._bytes += block.rows.nbytes
        self._open, self._open_rows = [], 0

    def _evict(self, now: float) -> None:
        while self._blocks and (
            self._bytes > self.max_bytes or now - self._blocks[0][0] > self.max_age_s
        ):
            _, block = self._blocks.popleft()
            self._bytes -= block.rows.nbytes

    def _all(self) -> Iterator[schema.Batch]:
        for _, block in self._blocks:
            yield block
        yield from self._open

    def oldest(self) -> dict[str, int]:
        """The oldest seq still held, per device."""
        found: dict[bytes, int] = {}
        for block in self._all():
            names, inverse = self._devices(block.rows)
            if inverse is None:
                first = np.arange(len(names))
            else:
                _, first = np.unique(inverse, return_index=True)
            seqs = block.rows["seq"][first].tolist()
            for name, seq in zip(names.tolist(), seqs, strict=True):
                if name not in found:
                    found[name] = seq
        return {schema.device_name(name): seq for name, seq in found.items()}

    def since(
        self,
        after: dict[str, int],
        after_ts_ms: int,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> Iterator[schema.Batch]:
        """Samples with seq above `after[device]`, or for devices not in `after` newer than
        `after_ts_ms` (or, if given, with a seq above `after_seq`), in publication order, in
        batches of bounded size; with `limit`, only the newest `limit` of them."""
        return self.select(after, after_ts_ms, after_seq, limit)[0]

    def select(
        self,
        after: dict[str, int],
        after_ts_ms: int,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> tuple[Iterator[schema.Batch], dict[str, tuple[int, int]]]:
        """`since`, and per device the first and last seq left out by `limit` (held, but
        older than the newest `limit` samples asked for)."""
        thresholds = {name.encode(): seq for name, seq in after.items()}
        # A snapshot: the blocks may change while the answer is being sent.
        memo: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        picks = [
            (b, self._wanted(b.rows, thresholds, after_ts_ms, after_seq, memo)) for b in self._all()
        ]
        total = sum(int(np.count_nonzero(mask)) for _, mask in picks)
        skip = total - limit if limit is not None and total > limit else 0
        return self._picked(picks, skip), self._given_up(picks, skip)

    def _wanted(
        self,
        rows: np.ndarray,
        thresholds: dict[bytes, int],
        after_ts_ms: int,
        after_seq: int | None,
        memo: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> np.ndarray:
        names, inverse = self._devices(rows)
        key = id(names)  # a grid's layout lives as long as the request: once per layout
        if inverse is not None or key not in memo:
            memo[key] = (
                names,  # kept alive, so that its id is not reused within the request
                np.array([thresholds.get(bytes(n), -1) for n in names], dtype=np.int64),
                np.array([bytes(n) in thresholds for n in names]),
            )
        _, limit, known = memo[key]
        seqs = rows["seq"].astype(np.int64)
        unknown = seqs > after_seq if after_seq is not None else rows["ts_ms"] > after_ts_ms
        if inverse is None:  # a grid: row i is device i % len(names)
            d = len(names)
            return np.where(known, seqs.reshape(-1, d) > limit, unknown.reshape(-1, d)).ravel()
        return np.where(known[inverse], seqs > limit[inverse], unknown)

    def _devices(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The distinct devices of some rows and which each row is; for rows that repeat a
        tick layout (the usual block) the layout's devices and None (row i is device
        i % d), found in one comparison rather than a sort of 64-byte ids."""
        devices = rows["device"]
        if self._blocks_layout.ticks(devices) is None:
            layout = Layout.of(devices)
            if layout is None:
                return np.unique(devices, return_inverse=True)
            self._blocks_layout = layout
        return self._blocks_layout.devices, None

    @staticmethod
    def _picked(picks: list[tuple[schema.Batch, np.ndarray]], skip: int) -> Iterator[schema.Batch]:
        for block, mask in picks:
            picked = block.rows[mask]
            if skip:
                dropped = min(skip, len(picked))
                picked, skip = picked[dropped:], skip - dropped
            for start in range(0, len(picked), schema.ROWS_PER_MESSAGE):
                yield block.with_rows(picked[start : start + schema.ROWS_PER_MESSAGE])

    @staticmethod
    def _given_up(
        picks: list[tuple[schema.Batch, np.ndarray]], skip: int
    ) -> dict[str, tuple[int, int]]:
        """First and last seq per device of the `skip` oldest picked samples (a device's
        samples are in seq order, so these are each device's oldest)."""
        parts = []
        for block, mask in picks:
            if skip <= 0:
                break
            picked = block.rows[mask][:skip]
            parts.append(picked)
            skip -= len(picked)
        if not parts:
            return {}
        return schema.seq_spans(np.concatenate(parts))
