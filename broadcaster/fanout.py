"""Fan-out to WebSocket clients with a bound on what any one of them may hold up.

Writes never wait for a client, so one that stops reading would grow its server-side
buffer forever. Before each batch, a connection whose unsent bytes exceed the bound is
closed with 1008 and aborted if it does not answer in time; the others never wait for it.

A client that resumes is *held* meanwhile: its live samples are kept (up to a bound,
past which it is dropped like a slow client) instead of written, and its missed samples
are written a chunk at a time, each waiting for the one before to drain, so that a long
history never counts against the buffer bound. A large refill of the live stream (what the
broadcaster's own subscriber missed, broadcaster.relay) is sent to every client the same
way, a chunk at a time.

Gap messages (seqs a client will not get) go to the clients whose subscription covers
their device and whose stream they are in, in their place in the stream; a held client gets
them in its place among its held samples.

Each batch's frames are framed once per subscription (a server's frames are not masked,
and compression is off) and written to each connection in one `transport.write`, instead
of one `websockets.broadcast()` call per frame, which frames every message again for
every connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections import Counter, deque
from collections.abc import Iterable

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from broadcaster.subscription import Downsampler, Subscription
from common import render, schema
from delivery.gaps import GapRecord

log = logging.getLogger(__name__)


def peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


_LABELS = b',"anomaly":'


def blind(sample: bytes) -> bytes:
    """A sample's JSON without its labels: every key from `anomaly` on (anomaly,
    anomaly_id, anomaly_root, event) is dropped. Text inside a JSON string cannot hold
    this sequence (its quotes would be escaped), so the cut is always at the key."""
    at = sample.find(_LABELS)
    return sample if at < 0 else sample[:at] + b"}"


def text_frames(messages: Iterable[bytes]) -> bytes:
    """Messages as final, unmasked TEXT frames (RFC 6455 5.2), back to back."""
    parts = []
    for message in messages:
        n = len(message)
        if n < 126:
            parts.append(bytes((0x81, n)))
        elif n < 65536:
            parts.append(struct.pack("!BBH", 0x81, 126, n))
        else:
            parts.append(struct.pack("!BBQ", 0x81, 127, n))
        parts.append(message)
    return b"".join(parts)


def write(connections: Iterable[ServerConnection], messages: list[bytes]) -> int:
    """Write the messages to every open connection; returns how many connections got them.

    Safe beside websockets' own writes: everything runs on the event loop thread and
    websockets hands each of its frames to the transport at once, so frames never
    interleave; a connection that is closing is skipped, as `broadcast()` does.
    """
    if not messages:
        return 0
    wire = text_frames(messages)
    written = 0
    for connection in connections:
        if connection.protocol.state is State.OPEN and not connection.transport.is_closing():
            connection.transport.write(wire)
            written += 1
    return written


async def _drained(connection: ServerConnection) -> None:
    """Until the connection's buffer is below websockets' write limit, or it is gone."""
    try:
        await connection.drain()
    except (OSError, ConnectionClosed):
        pass


def _last_per_device(rows: np.ndarray, count: int) -> np.ndarray:
    """The last `count` rows of each device, in their order."""
    keep = np.zeros(len(rows), bool)
    _, inverse = np.unique(rows["device"], return_inverse=True)
    for i in range(int(inverse.max()) + 1 if len(rows) else 0):
        keep[np.flatnonzero(inverse == i)[-count:]] = True
    return rows[keep]


def gap_message(records: list[GapRecord]) -> bytes:
    """The one gap message: `{"gap": {"ranges": [...]}}` (docs/formats.md)."""
    return json.dumps({"gap": {"ranges": [r.describe() for r in records]}}).encode()


class Held:
    """The live stream of a resuming client (its samples, and the gap records of the live
    stream), kept until its missed samples are written."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[schema.Batch | list[GapRecord]] = []
        self.rows = 0

    def add(self, batch: schema.Batch) -> bool:
        """Keep the batch; False once more than `limit` samples are kept."""
        if len(batch):
            self.items.append(batch)
            self.rows += len(batch)
        return self.rows <= self.limit

    def note(self, records: list[GapRecord]) -> None:
        """Keep gap records in their place among the samples."""
        self.items.append(records)

    def take(self) -> list[schema.Batch | list[GapRecord]]:
        items, self.items, self.rows = self.items, [], 0
        return items


class Fanout:
    """The clients that receive samples, what each subscribed to, and the policy for slow ones.

    Clients with the same subscription share the frames: each batch is rendered once per
    distinct subscription, not once per client.
    """

    STALL_S = 10.0  # a resuming client that takes none of a chunk for this long is dropped
    PACE_S = 1.0  # the longest a chunk of a live refill waits for the clients to drain it
    LATEST_MS = 10_000  # a new client's first samples: each device's newest of this span
    LATEST_ROWS = 10_000

    def __init__(self, max_buffer: int, close_timeout: float, recent_rows: int = 100_000) -> None:
        self.max_buffer = max_buffer
        self.close_timeout = close_timeout
        self.clients: dict[ServerConnection, Subscription] = {}
        self.held: dict[ServerConnection, Held] = {}
        # samples per chunk of a resume: a quarter of the buffer bound at <= 256 bytes each
        self.chunk_rows = max(1, max_buffer // 1024)
        self.sent = 0  # frames written, summed over clients
        self.dropped_clients = 0
        self._samplers: dict[Subscription, Downsampler] = {}
        # One object per distinct subscription: `send` tells its clients' groups apart by
        # identity (cheap for thousands of clients), and equal ones must share a group, or
        # the group's downsampler would pass each batch once, to the first group only.
        self._subscriptions: dict[Subscription, Subscription] = {}
        self._users: Counter[Subscription] = Counter()  # clients per subscription
        # Per client, the newest sample timestamp relayed when it connected, if it asked for
        # no sample then (`history=0`): a gap before that is not in its stream. None: the
        # client's stream began with each device's latest sample, its history, or `since`.
        self.joined: dict[ServerConnection, int | None] = {}
        self.newest_ms: int | None = None  # the newest sample timestamp relayed so far
        self._recent: deque[schema.Batch] = deque()
        self._recent_rows = 0
        self._recent_limit = recent_rows
        self._closing: set[asyncio.Task[None]] = set()

    def add(self, connection: ServerConnection, subscription: Subscription) -> None:
        if connection not in self.joined:
            self.joined[connection] = self.newest_ms if subscription.history == 0 else None
        previous = self.clients.get(connection)
        self.clients[connection] = self._subscriptions.setdefault(subscription, subscription)
        self._users[subscription] += 1
        if previous is not None:
            self._unused(previous)

    def discard(self, connection: ServerConnection) -> None:
        self.held.pop(connection, None)
        self.joined.pop(connection, None)
        subscription = self.clients.pop(connection, None)
        if subscription is not None:
            self._unused(subscription)

    def _unused(self, subscription: Subscription) -> None:
        """One client less of `subscription`: its object and downsampler are forgotten
        with the last."""
        self._users[subscription] -= 1
        if self._users[subscription] <= 0:
            del self._users[subscription]
            self._subscriptions.pop(subscription, None)
            self._samplers.pop(subscription, None)

    def send(self, batch: schema.Batch) -> None:
        """Write the batch to every client that is keeping up, as each subscribed to it.

        One pass over the clients: those of the first subscription seen (usually the only
        one) are written as they are met, the others grouped and written after; the
        per-client checks are inlined (the write system call is the only cost left that
        grows with the clients: about 10 us each here)."""
        self._remember(batch)
        limit, held_all = self.max_buffer, self.held
        first: Subscription | None = None
        wire = b""
        count = written = 0
        groups: dict[Subscription, list[ServerConnection]] = {}
        for connection, subscription in list(self.clients.items()):
            transport = connection.transport
            if transport is None or transport.is_closing():
                continue
            if transport.get_write_buffer_size() > limit:
                self._drop(connection)
            elif held_all and (held := held_all.get(connection)) is not None:
                rows = (
                    batch.rows
                    if subscription.devices is None
                    else batch.rows[subscription.wants(batch.rows)]
                )
                if not held.add(batch.with_rows(rows)):
                    self._drop(connection, f"{held.rows} live samples held while resuming")
            elif subscription is first or first is None:
                if first is None:
                    first = subscription
                    frames = self._frames(subscription, batch)
                    count, wire = len(frames), text_frames(frames)
                if wire and connection.protocol.state is State.OPEN:
                    transport.write(wire)
                    written += 1
            else:
                groups.setdefault(subscription, []).append(connection)
        self.sent += count * written
        for subscription, connections in groups.items():
            frames = self._frames(subscription, batch)
            self.sent += len(frames) * write(connections, frames)

    async def send_paced(self, batch: schema.Batch) -> None:
        """Send a large batch (a refill) as `send` does, a chunk at a time, each once the
        clients it filled past half the buffer bound have drained it (at most PACE_S
        each), so that a refill does not count against the bound of clients that read."""
        for start in range(0, len(batch), self.chunk_rows):
            self.send(batch.with_rows(batch.rows[start : start + self.chunk_rows]))
            full = [
                connection
                for connection in self.clients
                if connection not in self.held
                and connection.transport is not None
                and not connection.transport.is_closing()
                and connection.transport.get_write_buffer_size() > self.max_buffer // 2
            ]
            if full:
                waits = [asyncio.ensure_future(_drained(c)) for c in full]
                _, late = await asyncio.wait(waits, timeout=self.PACE_S)
                for wait in late:  # too slow: the buffer bound decides, at the next chunk
                    wait.cancel()

    def send_gaps(self, records: list[GapRecord]) -> None:
        """Name seqs of the live stream that will not come (one gap message, before the
        devices' next samples) to each client whose subscription covers their device and
        whose stream they are in: not before the samples a `history=0` client joined at
        (the sample before the gap was relayed after it connected)."""
        for connection, subscription in list(self.clients.items()):
            devices, joined = subscription.devices, self.joined.get(connection)
            wanted = [
                r
                for r in records
                if (devices is None or r.device in devices)
                and (joined is None or r.gap.after_ms > joined)
            ]
            if not wanted:
                continue
            held = self.held.get(connection)
            if held is not None:
                held.note(wanted)
            else:
                self.sent += write([connection], [gap_message(wanted)])

    def history(
        self, connection: ServerConnection, subscription: Subscription, connecting: bool = False
    ) -> None:
        """Send the last `subscription.history` samples per device to one client, now; when
        `connecting` without a history asked for, the latest sample of each device."""
        count = subscription.history
        if count is None and connecting:
            self._send_latest(connection, subscription)
            return
        if not count or not self._recent:
            return
        rows = np.concatenate([b.rows for b in self._recent])
        rows = rows[subscription.wants(rows)]
        recent = self._recent[-1].with_rows(self._last(subscription, rows, count))
        write([connection], self._render(subscription, recent))

    def _send_latest(self, connection: ServerConnection, subscription: Subscription) -> None:
        """The newest sample of each device among the recent ones: at most LATEST_ROWS
        samples of the last LATEST_MS are looked at, so a thousand clients connecting at
        once cost a thousand small searches, not a thousand copies of the history."""
        parts: list[np.ndarray] = []
        seen = 0
        newest = None
        for batch in reversed(self._recent):
            last = int(batch.rows["ts_ms"][-1]) if len(batch) else None
            if newest is None:
                newest = last
            if seen >= self.LATEST_ROWS or (
                last is not None and newest is not None and last < newest - self.LATEST_MS
            ):
                break
            parts.append(batch.rows)
            seen += len(batch)
        if not parts:
            return
        rows = np.concatenate(parts[::-1])
        rows = rows[subscription.wants(rows)]
        if len(rows):
            latest = self._recent[-1].with_rows(self._last(subscription, rows, 1))
            write([connection], self._render(subscription, latest))

    def _last(self, subscription: Subscription, rows: np.ndarray, count: int) -> np.ndarray:
        """The last `count` samples of each device for a joining client; with `max_rate`,
        those its subscription's downsampler lets it have (the rate holds across the join)."""
        if subscription.max_rate is None:
            return _last_per_device(rows, count)
        return self._sampler(subscription).ending(rows, count)

    def _sampler(self, subscription: Subscription) -> Downsampler:
        """One downsampler per subscription: its clients get the same frames."""
        assert subscription.max_rate is not None
        return self._samplers.setdefault(subscription, Downsampler(subscription.max_rate))

    def hold(self, connection: ServerConnection, limit: int) -> None:
        """Keep the client's live samples (up to `limit`) instead of writing them. Its
        stream is now the one after its `since`: every later gap of its devices is in it."""
        self.held[connection] = Held(limit)
        self.joined[connection] = None

    def take_held(
        self, connection: ServerConnection
    ) -> list[schema.Batch | list[GapRecord]] | None:
        """The live samples (and gap records) held for the client since the last call, in
        order; None if it is gone."""
        held = self.held.get(connection)
        return None if held is None else held.take()

    def release(self, connection: ServerConnection) -> None:
        """Write the client's live samples again (call right after an empty `take_held`,
        with no await between, so that none is skipped)."""
        self.held.pop(connection, None)

    async def write_paced(
        self, connection: ServerConnection, subscription: Subscription, batches: list[schema.Batch]
    ) -> bool:
        """Write the samples as `subscription` renders them, a chunk at a time, each after
        the one before has drained; False if the client left or was dropped as too slow."""
        for batch in batches:
            for start in range(0, len(batch), self.chunk_rows):
                part = batch.with_rows(batch.rows[start : start + self.chunk_rows])
                frames = self._render(subscription, part)
                if connection not in self.clients or not write([connection], frames):
                    return False
                self.sent += len(frames)
                try:
                    await asyncio.wait_for(connection.drain(), self.STALL_S)
                except TimeoutError:
                    self._drop(connection, f"nothing of its history read for {self.STALL_S:g} s")
                    return False
                except OSError:
                    return False
        return True

    def _remember(self, batch: schema.Batch) -> None:
        if len(batch):
            newest = int(batch.rows["ts_ms"][-1])
            if self.newest_ms is None or newest > self.newest_ms:
                self.newest_ms = newest
        self._recent.append(batch)
        self._recent_rows += len(batch)
        while self._recent_rows - len(self._recent[0]) >= self._recent_limit:
            self._recent_rows -= len(self._recent.popleft())

    def _frames(self, subscription: Subscription, batch: schema.Batch) -> list[bytes]:
        rows = batch.rows
        if subscription.devices is not None:
            rows = rows[subscription.wants(rows)]
        if subscription.max_rate is not None:
            rows = rows[self._sampler(subscription).keep(rows)] if len(rows) else rows
        return self._render(subscription, batch.with_rows(rows))

    @staticmethod
    def _render(subscription: Subscription, batch: schema.Batch) -> list[bytes]:
        objects = render.json_objects(batch, subscription.fields)
        if subscription.labels is False:
            objects = [blind(o) for o in objects]
        if subscription.batch:
            ts = batch.rows["ts_ms"]
            if len(ts) > 1 and (np.diff(ts) < 0).any():  # a refill by device: by tick instead
                order = np.argsort(ts, kind="stable")  # each device's samples keep their order
                objects, ts = [objects[i] for i in order.tolist()], ts[order]
            return [b"[" + b",".join(objects[a:b]) + b"]" for a, b in _ticks(ts)]
        return objects

    def _drop(self, connection: ServerConnection, why: str = "") -> None:
        self.discard(connection)
        self.dropped_clients += 1
        log.warning(
            "client %s fell behind (%s): closing with 1008",
            peer(connection),
            why
            or f"{connection.transport.get_write_buffer_size()} bytes unsent > {self.max_buffer}",
        )
        task = asyncio.create_task(self._close(connection, CloseCode.POLICY_VIOLATION, "too slow"))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, connection: ServerConnection, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(connection.close(code, reason), self.close_timeout)
        except (TimeoutError, OSError):
            pass
        finally:
            connection.transport.abort()


def _ticks(ts: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each tick's samples, `ts` in time order (a batch=1 frame holds one
    tick: a bus message is one tick, a refill or a history chunk several)."""
    if not len(ts):
        return []
    cuts = np.flatnonzero(ts[1:] != ts[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(ts)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))
