"""Alerts that detectors send back on the WebSocket they read, checked and passed to the
scorer over ZeroMQ.

    {"alert": {"device": "host-01", "seq": 1234, "score": 0.97, "kind": "spike"}}
    {"alert": [{"device": "host-01", "seq": 1234}, {"device": "host-02", "timestamp": "..."}]}

An alert names a device the connection receives and one of its samples, by `seq` or by
`timestamp` (as the sample showed it, or ms since the epoch), never one not yet sent;
`score` (a number), `kind` (a guess among the anomaly kinds) and `detector` (a name; by
default the connection's `?detector=`) are optional. A message is taken whole
(`{"alerted": n}`) or refused whole (`{"error": "..."}`, naming the first bad alert).
Alerts have their own rate limit per connection, apart from the one on other messages:
past it they are refused and counted (one error a second says so), and a connection that
sends ten times as many is closed (1008).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from broadcaster.admission import InboundLimit
from broadcaster.subscription import Subscription
from common import alerts, schema
from common.bus import AlertSender
from common.layout import Layout

MAX_PER_MESSAGE = 1000
_KEYS = {"device", "seq", "timestamp", "score", "kind", "detector"}
_KINDS = {k: i + 1 for i, k in enumerate(schema.ANOMALY_KINDS)}
REASONS = ("rate", "invalid", "unknown_device", "not_subscribed", "future")


class AlertError(ValueError):
    """An alert that cannot be taken; `reason` is one of REASONS, the message for the client."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class Latest:
    """Each device's newest (seq, timestamp) relayed: which devices exist, and which
    samples have been sent. A batch repeating the last tick layout costs two assignments."""

    def __init__(self) -> None:
        self._slot: dict[bytes, int] = {}
        self.seq = np.full(0, -1, np.int64)
        self.ts = np.zeros(0, np.int64)
        self._layout = Layout()
        self._layout_slots = np.zeros(0, np.int64)

    def update(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        devices = rows["device"]
        if self._layout.ticks(devices) is not None:
            tail = rows[-len(self._layout) :]
            self.seq[self._layout_slots] = tail["seq"]
            self.ts[self._layout_slots] = tail["ts_ms"]
            return
        names, last = np.unique(devices[::-1], return_index=True)
        last = len(rows) - 1 - last
        slots = np.array([self._slot_of(bytes(n)) for n in names.tolist()], np.int64)
        # a device's rows are in seq order: its last row is its newest
        self.seq[slots] = np.maximum(self.seq[slots], rows["seq"][last].astype(np.int64))
        self.ts[slots] = np.maximum(self.ts[slots], rows["ts_ms"][last])
        layout = Layout.of(devices)
        if layout is not None:
            self._layout = layout
            self._layout_slots = np.array(
                [self._slot[bytes(d)] for d in layout.devices.tolist()], np.int64
            )

    def _slot_of(self, name: bytes) -> int:
        slot = self._slot.get(name)
        if slot is None:
            slot = self._slot[name] = len(self._slot)
            if slot >= len(self.seq):
                grow = max(64, 2 * len(self.seq))
                self.seq = np.concatenate([self.seq, np.full(grow - len(self.seq), -1, np.int64)])
                self.ts = np.concatenate([self.ts, np.zeros(grow - len(self.ts), np.int64)])
        return slot

    def newest(self, device: str) -> tuple[int, int] | None:
        slot = self._slot.get(device.encode("utf-8"))
        return None if slot is None else (int(self.seq[slot]), int(self.ts[slot]))


def alert_body(text: str) -> object | None:
    """The body of an alert message, or None if `text` is another kind of message (or
    not JSON: the other messages' path says so)."""
    if '"alert"' not in text[:64]:
        return None
    try:
        import json

        message = json.loads(text)
    except ValueError:
        return None
    if isinstance(message, dict) and set(message) == {"alert"}:
        return message["alert"]
    return None


def count(body: object) -> int:
    """How many alerts a message body holds, for the rate limit (bad bodies count one)."""
    return len(body) if isinstance(body, list) and body else 1


def parse(
    body: object, subscription: Subscription, latest: Latest, detector: str, now_ms: int
) -> np.ndarray:
    """The alerts of one message as records; AlertError naming the first bad one."""
    items = body if isinstance(body, list) else [body]
    if not items or len(items) > MAX_PER_MESSAGE:
        raise AlertError(f"an alert message holds 1 to {MAX_PER_MESSAGE} alerts, got {len(items)}")
    records = np.zeros(len(items), alerts.RECORD)
    for i, item in enumerate(items):
        where = f"alert {i}: " if len(items) > 1 else ""
        try:
            _one(item, records[i : i + 1], subscription, latest, detector)
        except AlertError as exc:
            raise AlertError(where + str(exc), exc.reason) from None
    records["received_ms"] = now_ms
    return records


def _one(
    item: object, out: np.ndarray, subscription: Subscription, latest: Latest, detector: str
) -> None:
    if not isinstance(item, dict):
        raise AlertError('an alert is an object like {"device": "host-01", "seq": 12}')
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise AlertError(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_KEYS))}")
    device = item.get("device")
    if not isinstance(device, str) or schema.device_problem(device):
        raise AlertError(f"device must be a device id, got {device!r}")
    newest = latest.newest(device)
    if newest is None:
        raise AlertError(f"unknown device {device!r}", "unknown_device")
    if subscription.devices is not None and device not in subscription.devices:
        raise AlertError(
            f"device {device!r} is not in this connection's subscription", "not_subscribed"
        )
    seq, stamp = item.get("seq"), item.get("timestamp")
    if seq is None and stamp is None:
        raise AlertError("an alert names its sample by seq or timestamp")
    out["seq"], out["ts_ms"] = alerts.NO_SEQ, alerts.NO_TIME
    if seq is not None:
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise AlertError(f"seq must be an integer >= 0, got {seq!r}")
        if seq > newest[0]:
            raise AlertError(
                f"seq {seq} of {device!r} is in the future (newest sent: {newest[0]})", "future"
            )
        out["seq"] = seq
    else:
        ts = _timestamp(stamp)
        if ts > newest[1]:
            raise AlertError(
                f"timestamp {stamp!r} of {device!r} is in the future (newest sent: "
                f"{schema.format_timestamp(newest[1], schema.MILLISECONDS)})",
                "future",
            )
        out["ts_ms"] = ts
    score = item.get("score")
    if score is not None:
        number = isinstance(score, (int, float)) and not isinstance(score, bool)
        if not number or not math.isfinite(score):
            raise AlertError(f"score must be a finite number, got {score!r}")
        out["score"] = score
    else:
        out["score"] = np.nan
    kind = item.get("kind")
    if kind is not None and kind not in _KINDS:
        raise AlertError(f"unknown kind {kind!r}; allowed: {', '.join(schema.ANOMALY_KINDS)}")
    out["kind"] = _KINDS.get(kind, 0)
    name = item.get("detector", detector)
    out["detector"] = _detector_bytes(name)
    out["device"] = device.encode("utf-8")


def _detector_bytes(name: object) -> bytes:
    if not isinstance(name, str) or schema.device_problem(name):
        raise AlertError(f"detector must be a name of 1 to 64 bytes, got {name!r}")
    return name.encode("utf-8")


def detector_name(name: str) -> str:
    """A connection's `?detector=` name, checked like the one an alert may carry."""
    _detector_bytes(name)
    return name


def _timestamp(value: object) -> int:
    if isinstance(value, bool):
        raise AlertError(f"timestamp must be text or ms since the epoch, got {value!r}")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(np.datetime64(value.strip().replace(" ", "T"), "ms").astype(np.int64))
        except ValueError:
            pass
    raise AlertError(f"timestamp {value!r} is not like 2025-08-04 10:00:00.250 or a number of ms")


@dataclass
class AlertLimit:
    """Per connection: `rate` alerts a second (bursts of as many); past ten times that, the
    connection is closed."""

    rate: float
    soft: InboundLimit = field(init=False)
    hard: InboundLimit = field(init=False)
    last_error: float = 0.0
    refused_since_error: int = 0

    def __post_init__(self) -> None:
        burst = max(int(self.rate), 1)
        self.soft = InboundLimit(self.rate, burst)
        self.hard = InboundLimit(self.rate * 10, burst * 10)

    def flood(self, now: float, n: int) -> bool:
        """Whether the connection sends ten times past its limit (it is then closed)."""
        return not self.hard.allow(now, n)

    def allow(self, now: float, n: int) -> bool:
        return self.soft.allow(now, n)


class Outbox:
    """Alerts taken on every connection, sent to the scorers once per turn of the event
    loop (one message for all that came meanwhile)."""

    def __init__(self, sender: AlertSender | None) -> None:
        self.sender = sender
        self.source = int.from_bytes(os.urandom(8), "little")
        self.number = 0  # alerts sent so far
        self._pending: list[np.ndarray] = []
        self._scheduled = False

    def add(self, records: np.ndarray) -> None:
        self._pending.append(records)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        records = np.concatenate(self._pending)
        self._pending = []
        if self.sender is not None:
            self.sender.send(alerts.encode(records, self.source, self.number), len(records))
        self.number += len(records)


def now_ms() -> int:
    return int(time.time() * 1000)
