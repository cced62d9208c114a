"""Completeness: the last seq written per device, duplicates dropped, gaps found and refilled.

On start the logger reads the last seq of every device from its CSV's tail and asks the
producer for what came after; while running, a jump in a device's seq makes it ask for the
missing samples before writing the later ones. What the producer no longer holds becomes
an explicit gap record: "lost" (older than the producer's history, or no answer), or
"not_produced" (the producer was down: the gap ends where its current run began).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq
import zmq.asyncio

from common import recovery, schema
from common.bus import PLAIN, Security
from logger.sink import rotated_files

log = logging.getLogger(__name__)

GAPS_HEADER = "device,first_missing_seq,last_missing_seq,after,before,reason"
_TAIL_BYTES = 16 * 1024 * 1024


def gaps_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".gaps.csv")


@dataclass(frozen=True)
class Gap:
    device: str
    first: int  # first missing seq
    last: int  # last missing seq
    after_ms: int  # timestamp of the sample before the gap
    before_ms: int  # timestamp of the sample after it

    def row(self, reason: str, precision: int) -> str:
        rows = schema.empty_rows(2)
        rows["ts_ms"] = [self.after_ms, self.before_ms]
        after, before = schema.format_timestamps(schema.Batch(rows, precision))
        return f"{self.device},{self.first},{self.last},{after},{before},{reason}\n"


class SeqTracker:
    """The newest (seq, timestamp) written per device.

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
        self._names = np.zeros(0, f"S{schema.DEVICE_MAX_BYTES}")  # the last tick layout seen
        self._names_slots = np.zeros(0, np.int64)
        self._plan: tuple[np.ndarray, object] | None = None  # (rows, plan) of the last batch

    @classmethod
    def from_csv(cls, path: Path) -> SeqTracker:
        """Read the devices' last seqs from the tail of a CSV log (if there is one)."""
        tracker = cls()
        if not _has_rows(path):
            # Just rotated (or crashed while rotating): the newest part holds the last rows.
            parts = rotated_files(path)
            if not parts:
                return tracker
            path = parts[-1]
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                f.seek(max(0, size - _TAIL_BYTES))
                tail = f.read()
        except FileNotFoundError:
            return tracker
        if size > _TAIL_BYTES:
            tail = tail[tail.find(b"\n") + 1 :]
        lines = [line for line in tail.decode("ascii", "replace").splitlines() if line]
        if lines and lines[0] == schema.CSV_HEADER:
            lines = lines[1:]
        if not lines:
            return tracker
        newest: dict[str, tuple[int, str]] = {}  # device -> (seq, timestamp) of its last row
        for line in lines:
            fields = line.split(",")
            seq = int(fields[6])
            known = newest.get(fields[5])
            if known is None or seq >= known[0]:
                newest[fields[5]] = (seq, fields[0])
        stamps = np.array([ts for _, ts in newest.values()], dtype="datetime64[ms]")
        for (device, (seq, _)), ts in zip(newest.items(), stamps.astype(np.int64), strict=True):
            tracker.remember(device.encode(), seq, int(ts))
        return tracker

    @property
    def last(self) -> dict[bytes, tuple[int, int]]:
        """Device -> (seq, timestamp ms) of its newest written sample."""
        return {d: (int(self._seq[i]), int(self._ts[i])) for d, i in self._slot.items()}

    def remember(self, device: bytes, seq: int, ts_ms: int) -> None:
        slot = self._slots(np.array([device], f"S{schema.DEVICE_MAX_BYTES}"))[0]
        self._seq[slot], self._ts[slot] = seq, ts_ms
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
        if not len(rows) or not self._slot:
            return []
        plan = self._planned(rows)
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
        return schema.Batch(rows[keep], batch.precision)

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
        keys = np.ascontiguousarray(rows["device"]).view(np.uint64).reshape(n, -1)
        repeats = np.flatnonzero((keys == keys[0]).all(axis=1))
        d = int(repeats[1]) if len(repeats) > 1 else n
        if n % d:
            return None
        grid = keys.reshape(n // d, d, -1)
        if not (grid == grid[0]).all():
            return None
        seq = rows["seq"].astype(np.int64).reshape(n // d, d)
        if n > d and not (np.diff(seq, axis=0) == 1).all():
            return None
        names = rows["device"][:d]
        if len(self._names) == d and (names == self._names).all():
            slots = self._names_slots
        else:
            if len(set(names.tolist())) != d:
                return None
            slots = self._slots(names)
            self._names, self._names_slots = names.copy(), slots
        return _Ticks(names, slots, seq, rows["ts_ms"].reshape(n // d, d))

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


def _has_rows(path: Path) -> bool:
    try:
        return path.stat().st_size > len(schema.CSV_HEADER) + 1
    except FileNotFoundError:
        return False


class HistoryClient:
    """Asks the producer's history for missed samples (DEALER to its ROUTER)."""

    def __init__(
        self, endpoint: str, idle_timeout: float = 2.0, security: Security = PLAIN
    ) -> None:
        self.endpoint = endpoint
        self.security = security
        self.idle_timeout = idle_timeout
        self._context = zmq.asyncio.Context()
        self._socket: zmq.asyncio.Socket | None = None
        self.requests = 0

    def _connect(self) -> zmq.asyncio.Socket:
        if self._socket is None:
            self._socket = self._context.socket(zmq.DEALER)
            self._socket.linger = 0
            self._socket.rcvhwm = 0
            self._socket.ipv6 = "[" in self.endpoint
            self.security.connect(self._socket)
            self._socket.connect(self.endpoint)
        return self._socket

    async def fetch(
        self, after: dict[str, int], after_ts_ms: int
    ) -> tuple[list[schema.Batch], Facts] | None:
        """(batches, what the producer knows of its gaps) or None if it did not answer."""
        self.requests += 1
        sock = self._connect()
        await sock.send_multipart(recovery.encode_request(after, after_ts_ms))
        batches: list[schema.Batch] = []
        while True:
            if not await sock.poll(int(self.idle_timeout * 1000), zmq.POLLIN):
                log.warning("no answer from the replay endpoint %s", self.endpoint)
                self._reset()  # a late answer must not be taken for the next one
                return None
            try:
                reply = recovery.decode_reply(await sock.recv_multipart())
            except (recovery.ProtocolError, schema.MessageError) as exc:
                log.warning("bad replay message (%s); giving up this request", exc)
                self._reset()
                return None
            if isinstance(reply, tuple):
                return batches, Facts(run_first=reply[1], skipped=reply[2])
            batches.append(reply)

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close(0)
            self._socket = None

    def close(self) -> None:
        self._reset()
        self._context.term()


@dataclass(frozen=True)
class Facts:
    """What the producer says about seqs it never published."""

    run_first: dict[str, int]  # first seq of its current run, per device
    skipped: list[tuple[int, int]]  # seq ranges it skipped (paused, or far behind)


def classify(gap: Gap, facts: Facts | None) -> str:
    """'not_produced' when the gap ends where the producer's current run began, or lies in
    a range it skipped; otherwise 'lost'."""
    if facts is None:
        return "lost"
    if facts.run_first.get(gap.device) == gap.last + 1:
        return "not_produced"
    if any(first <= gap.first and gap.last <= last for first, last in facts.skipped):
        return "not_produced"
    return "lost"


async def refill(
    tracker: SeqTracker,
    client: HistoryClient,
    after: dict[str, int],
    after_ts_ms: int,
    only: list[str] | None = None,
) -> tuple[list[schema.Batch], list[tuple[Gap, str]], Facts | None]:
    """Fetch what came after `after` and admit it in order.

    Returns the rows to write, the gaps the producer could not fill (with their reason),
    and what the producer knows of the seqs it never published (None without an answer).
    """
    answer = await client.fetch(after, after_ts_ms)
    if answer is None:
        return [], [], None
    batches, facts = answer
    fresh: list[schema.Batch] = []
    left: list[tuple[Gap, str]] = []
    for batch in schema.merge(batches):
        part = batch
        if only is not None:
            part = schema.Batch(
                batch.rows[np.isin(batch.rows["device"], [d.encode() for d in only])],
                batch.precision,
            )
        left += [(g, classify(g, facts)) for g in tracker.gaps(part)]
        fresh.append(tracker.admit(part))
    return fresh, left, facts


def describe(gap: Gap, reason: str) -> str:
    return f"{gap.device} seq {gap.first}..{gap.last} ({gap.last - gap.first + 1} samples) {reason}"
