"""Where a WebSocket client resumes from: `since` in the URL, or a resume message.

    ?since=123                                   every device, samples with seq > 123
    ?since=host-01:123&since=host-02:456         per device (percent-encoded, repeated)
    ?since=100&since=host-02:456                 host-02 from 456, every other device from 100
    {"resume": {"since": 123}}
    {"resume": {"since": {"host-01": 123, "host-02": 456}}}

A per-device value is split at its last colon, so a device id may hold colons, commas or
quotes. Pure functions, no I/O: bad input raises SinceError with a message for the client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from common import schema

if TYPE_CHECKING:
    from broadcaster.subscription import Subscription

SEQ_MIN = -1  # since=-1: everything the producers hold
SEQ_MAX = 2**63 - 1
MAX_DEVICES = 100_000  # per-device entries in one resume
_SEQ = re.compile(r"-?[0-9]+")


class SinceError(ValueError):
    """A resume request that cannot be followed; the message says what is wrong."""


@dataclass(frozen=True)
class Since:
    """Where a client's resume starts: seqs above `default` for every device it subscribes
    to, or above `devices[d]` for the devices named (those win)."""

    default: int | None = None
    devices: Mapping[str, int] = field(default_factory=dict)

    def after(self, subscribed: frozenset[str] | None) -> tuple[dict[str, int], int | None]:
        """(seq to resume after per device, seq for every device not listed) for a client
        subscribed to `subscribed` (None: every device); the second is None when only the
        listed devices are resumed."""
        if subscribed is None:
            return dict(self.devices), self.default
        after = {d: self.devices.get(d, self.default) for d in sorted(subscribed)}
        return {d: s for d, s in after.items() if s is not None}, None

    def describe(self) -> dict[str, Any]:
        return {"since": self.default, "devices": dict(self.devices)}


def from_query(query: str) -> Since | None:
    """The `since` values of a URL query string (percent-decoded here); None if there are none."""
    values = parse_qs(query, keep_blank_values=True).get("since")
    if values is None:
        return None
    default: int | None = None
    devices: dict[str, int] = {}
    for value in values:
        if _SEQ.fullmatch(value):
            if default is not None:
                raise SinceError(f"since={value!r}: a bare seq may be given once")
            default = _seq(value, "since")
            continue
        device, colon, seq = value.rpartition(":")
        if not colon or not _SEQ.fullmatch(seq):
            raise SinceError(f"since must be SEQ or DEVICE:SEQ (an integer seq), got {value!r}")
        _add(devices, device, _seq(seq, f"since for {device!r}"))
    return Since(default, devices)


def from_message(body: Any) -> Since:
    """The body of a `{"resume": {...}}` message (already parsed JSON)."""
    if not isinstance(body, dict):
        raise SinceError('"resume" must be an object, like {"since": 123}')
    extra = sorted(set(body) - {"since"})
    if extra:
        raise SinceError(f"unknown key {extra[0]!r} in resume; allowed: since")
    if "since" not in body:
        raise SinceError('resume needs "since": a seq, or an object of device: seq')
    since = body["since"]
    if isinstance(since, dict):
        devices: dict[str, int] = {}
        for device, seq in since.items():
            _add(devices, device, _json_seq(seq, f"since for {device!r}"))
        return Since(None, devices)
    return Since(_json_seq(since, "since"), {})


def check(since: Since, subscription: Subscription) -> None:
    """Refuse a resume that the client's subscription cannot give exactly."""
    if subscription.max_rate is not None:
        raise SinceError("since cannot be combined with max_rate: a downsampled stream has gaps")
    if subscription.history:
        raise SinceError("since and history are alternatives: ask for one of them")
    if subscription.devices is not None:
        outside = sorted(set(since.devices) - subscription.devices)
        if outside:
            raise SinceError(f"since names {outside[0]!r}, which is not among the devices asked")
    if since.default is None and not since.devices:
        raise SinceError("since names no device")


def _seq(value: Any, what: str) -> int:
    """An integer seq: a JSON integer, or (from a URL) a string of digits."""
    if isinstance(value, str) and _SEQ.fullmatch(value):
        try:
            value = int(value)
        except ValueError:  # longer than Python converts
            raise SinceError(f"{what} must be between {SEQ_MIN} and {SEQ_MAX}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SinceError(f"{what} must be an integer seq, got {value!r}")
    seq = value
    if not SEQ_MIN <= seq <= SEQ_MAX:
        raise SinceError(f"{what} must be between {SEQ_MIN} and {SEQ_MAX}, got {seq}")
    return seq


def _json_seq(value: Any, what: str) -> int:
    if isinstance(value, str):
        raise SinceError(f"{what} must be a JSON integer, got the string {value!r}")
    return _seq(value, what)


def _add(devices: dict[str, int], device: Any, seq: int) -> None:
    if not isinstance(device, str) or not device:
        raise SinceError(f"since needs a device id before the last colon, got {device!r}")
    problem = schema.device_problem(device)
    if problem:
        raise SinceError(f"bad device id in since: {problem}")
    if device in devices:
        raise SinceError(f"since gives {device!r} twice")
    if len(devices) >= MAX_DEVICES:
        raise SinceError(f"since names more than {MAX_DEVICES} devices")
    devices[device] = seq
