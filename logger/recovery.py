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
    """The newest (seq, timestamp) written per device."""

    def __init__(self) -> None:
        self.last: dict[bytes, tuple[int, int]] = {}

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
            tracker.last[device.encode()] = (seq, int(ts))
        return tracker

    def after(self) -> tuple[dict[str, int], int]:
        """What to ask the producer for: seqs after these, and devices newer than that time."""
        after = {device.decode(): seq for device, (seq, _) in self.last.items()}
        newest = max((ts for _, ts in self.last.values()), default=0)
        return after, newest

    def _sorted(self, rows: np.ndarray):
        names, inverse = np.unique(rows["device"], return_inverse=True)
        known = [self.last.get(bytes(n)) for n in names]
        prev = np.array([k[0] if k else -1 for k in known], dtype=np.int64)
        prev_ts = np.array([k[1] if k else 0 for k in known], dtype=np.int64)
        seq = rows["seq"].astype(np.int64)
        order = np.lexsort((seq, inverse))
        s_inv, s_seq = inverse[order], seq[order]
        first_of_device = np.r_[True, s_inv[1:] != s_inv[:-1]]
        previous = np.where(first_of_device, -1, np.r_[-1, s_seq[:-1]])
        before = np.maximum(prev[s_inv], previous)
        return names, order, s_inv, s_seq, first_of_device, before, prev, prev_ts

    def gaps(self, batch: schema.Batch) -> list[Gap]:
        """Seq jumps in this batch relative to what was written, without writing anything."""
        rows = batch.rows
        if not len(rows) or not self.last:
            return []
        names, order, s_inv, s_seq, first, before, prev, prev_ts = self._sorted(rows)
        ts = rows["ts_ms"][order]
        jumps = np.flatnonzero((before >= 0) & (s_seq > before + 1))
        found = []
        for i in jumps:
            after_ms = (
                int(prev_ts[s_inv[i]])
                if first[i] or before[i] == prev[s_inv[i]]
                else int(ts[i - 1])
            )
            found.append(
                Gap(
                    names[s_inv[i]].decode(),
                    int(before[i]) + 1,
                    int(s_seq[i]) - 1,
                    after_ms,
                    int(ts[i]),
                )
            )
        return found

    def admit(self, batch: schema.Batch) -> schema.Batch:
        """The rows not written yet (newer than each device's last seq), and remember them."""
        rows = batch.rows
        if not len(rows):
            return batch
        names, order, s_inv, s_seq, first, before, prev, prev_ts = self._sorted(rows)
        keep_sorted = s_seq > before
        keep = np.empty(len(rows), bool)
        keep[order] = keep_sorted
        last_of_device = np.r_[s_inv[1:] != s_inv[:-1], True]
        ts = rows["ts_ms"][order]
        for i in np.flatnonzero(last_of_device & keep_sorted):
            self.last[bytes(names[s_inv[i]])] = (int(s_seq[i]), int(ts[i]))
        if keep.all():
            return batch
        return schema.Batch(rows[keep], batch.precision)


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
