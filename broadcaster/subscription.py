"""What a WebSocket client asked to receive: devices, fields, a maximum rate, batching,
and how much recent history to get on connect.

A client subscribes with the query string (`/?devices=host-01,host-02&fields=cpu,net&
max_rate=5&batch=1&history=100`) and/or a message `{"subscribe": {...}}` with the same
keys. The default is the spec's behaviour: everything, one sample per frame.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from broadcaster.since import Since, SinceError, from_message
from common import schema
from common.bounds import number_in

MAX_HISTORY = 1000
_KEYS = ("devices", "fields", "max_rate", "batch", "history", "labels")
_NOT_OURS = ("token", "since", "detector")
LABEL_POLICIES = ("sent", "blind", "never")


class SubscriptionError(ValueError):
    """The client asked for something that cannot be given; the message says what."""


@dataclass(frozen=True)
class Subscription:
    devices: frozenset[str] | None = None  # None: every device
    fields: tuple[str, ...] = schema.METRICS
    max_rate: float | None = None  # samples per second per device, at most
    batch: bool = False  # a JSON array per frame instead of one object
    # the last N samples per device, sent on subscribing; None (not asked): on connecting,
    # the latest sample of each device, so that a client shows data without waiting a period
    history: int | None = None
    # the label fields (anomaly, anomaly_id, anomaly_root, event): None (not asked) takes the
    # server's policy (see `with_labels`); False: a blind stream, for detectors under test
    labels: bool | None = None

    @classmethod
    def parse(cls, params: Mapping[str, Any]) -> Subscription:
        unknown = sorted(set(params) - set(_KEYS))
        if unknown:
            raise SubscriptionError(f"unknown key {unknown[0]!r}; allowed: {', '.join(_KEYS)}")
        devices = _names(params.get("devices"))
        for device in devices or ():
            problem = schema.device_problem(device)
            if problem:
                raise SubscriptionError(problem)
        fields = _names(params.get("fields"))
        if fields is not None:
            bad = [f for f in fields if f not in schema.METRICS]
            if bad or not fields:
                raise SubscriptionError(
                    f"unknown field {bad[0] if bad else ''!r}; allowed: {', '.join(schema.METRICS)}"
                )
        max_rate = _number(params.get("max_rate"), "max_rate", float, 0.001, 10_000.0)
        history = _number(params.get("history"), "history", int, 0, MAX_HISTORY)
        return cls(
            devices=frozenset(devices) if devices is not None else None,
            fields=tuple(m for m in schema.METRICS if m in fields) if fields else schema.METRICS,
            max_rate=max_rate,
            batch=_flag(params.get("batch")),
            history=None if history is None else int(history),
            labels=None if params.get("labels") is None else _flag(params.get("labels"), "labels"),
        )

    @classmethod
    def from_query(cls, query: str) -> Subscription:
        """From the URL's query string (the access token and `since`, also sent there, are
        not ours: see broadcaster.admission and broadcaster.since)."""
        return cls.parse({k: v[-1] for k, v in parse_qs(query).items() if k not in _NOT_OURS})

    @classmethod
    def from_message(cls, text: str) -> Subscription:
        """From a `{"subscribe": {...}}` message (see `parse_message` for any message)."""
        try:
            parsed = parse_message(text)
        except SinceError:
            parsed = None
        if not isinstance(parsed, Subscription):
            raise SubscriptionError('expected {"subscribe": {...}}')
        return parsed

    def describe(self) -> dict[str, Any]:
        return {
            "devices": sorted(self.devices) if self.devices is not None else "all",
            "fields": list(self.fields),
            "max_rate": self.max_rate,
            "batch": self.batch,
            "history": self.history,
            "labels": self.labels is not False,
        }

    def with_labels(self, policy: str) -> Subscription:
        """This subscription under the server's label policy (`sent`: labels unless asked
        not to; `blind`: none unless asked for; `never`); SubscriptionError if it asks for
        labels a `never` server does not send."""
        if policy == "never" and self.labels:
            raise SubscriptionError("labels are not sent by this server: the stream is blind")
        wanted = self.labels if self.labels is not None else policy == "sent"
        return replace(self, labels=wanted and policy != "never")

    def wants(self, rows: np.ndarray) -> np.ndarray:
        """Mask of the rows whose device this subscription covers."""
        if self.devices is None:
            return np.ones(len(rows), bool)
        return np.isin(rows["device"], [d.encode() for d in self.devices])


def parse_message(text: str) -> Subscription | Since:
    """A client's message: `{"subscribe": {...}}` or `{"resume": {...}}`. Raises
    SubscriptionError or SinceError, whose message is for the client."""
    try:
        message = json.loads(text)
    except ValueError:
        raise SubscriptionError('messages must be JSON, like {"subscribe": {...}}') from None
    if isinstance(message, dict) and set(message) == {"resume"}:
        return from_message(message["resume"])
    if isinstance(message, dict) and set(message) == {"subscribe"}:
        if not isinstance(message["subscribe"], dict):
            raise SubscriptionError('"subscribe" must be an object')
        return Subscription.parse(message["subscribe"])
    raise SubscriptionError('expected {"subscribe": {...}} or {"resume": {...}}')


class Downsampler:
    """Passes a device's sample only if it is at least 1/max_rate (sample time) after the
    last one passed, so no client ever gets a device faster than it asked."""

    def __init__(self, max_rate: float) -> None:
        self.period_ms = 1000.0 / max_rate
        self.last: dict[bytes, float] = {}

    def keep(self, rows: np.ndarray) -> np.ndarray:
        keep = np.zeros(len(rows), bool)
        names, inverse = np.unique(rows["device"], return_inverse=True)
        stamps = rows["ts_ms"]
        for i, name in enumerate(names.tolist()):
            last = self.last.get(name, -np.inf)
            for row in np.flatnonzero(inverse == i).tolist():
                if stamps[row] - last >= self.period_ms:
                    keep[row] = True
                    last = float(stamps[row])
            self.last[name] = last
        return keep

    def ending(self, rows: np.ndarray, count: int) -> np.ndarray:
        """The last `count` samples of each device in `rows` (recent ones, in order) as a
        client joining this rate gets them: ending at the sample last passed to the
        clients already on it, spaced a period apart or more, so that the live samples
        after them keep the rate. A device none was passed of yet ends at its newest
        sample, which then counts as passed."""
        keep = np.zeros(len(rows), bool)
        names, inverse = np.unique(rows["device"], return_inverse=True)
        stamps = rows["ts_ms"]
        for i, name in enumerate(names.tolist()):
            at = np.flatnonzero(inverse == i)
            end = self.last.get(name)
            if end is None:
                end = self.last[name] = float(stamps[at[-1]])
            taken, later = 0, np.inf
            for row in at[::-1].tolist():
                if taken == count:
                    break
                if stamps[row] <= end and later - stamps[row] >= self.period_ms:
                    keep[row] = True
                    later = float(stamps[row])
                    taken += 1
        return rows[keep]


def _names(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # ids holding a comma need the list form
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise SubscriptionError(f"expected a comma list or a list of strings, got {value!r}")


def _number(value: Any, name: str, kind: type, low: float, high: float) -> Any:
    if value is None:
        return None
    return number_in(value, name, low, high, SubscriptionError, kind)


def _flag(value: Any, name: str = "batch") -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise SubscriptionError(f"{name} must be 1 or 0, got {value!r}")
