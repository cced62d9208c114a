"""The catch-up protocol: how a consumer asks the producer for samples it missed.

ZeroMQ PUB/SUB drops what a subscriber misses while it is down or slow. The producer
keeps recent samples and answers on a ROUTER socket (the ZeroMQ Guide's "Clone" pattern):

    request  [b"catchup", JSON {"after": {device: last seq held}, "after_ts_ms": int,
                                "after_seq": int (optional), "limit": int (optional)}]
    reply    [b"batch", header, records] ...   (schema frames without the topic)
             [b"end", JSON {"oldest": {device: oldest seq kept}, "run_first": {...},
                            "skipped": [[first, last], ...], "series_first": seq,
                            "withheld": {device: [[first, last, reason], ...]},
                            "given_up": {device: [first, last]} (optional),
                            "series": {"source": "sim", "seed": 42, ...} (optional)}]

`after` asks, per device, for every sample with a greater seq; devices the subscriber has
never seen are sent from `after_ts_ms` on, or, if `after_seq` is given, those with a seq
above it (a broadcaster resuming a WebSocket client knows a seq, not the devices). With
`limit`, at most that many samples are sent, the newest; `given_up` then names, per
device, the first and last seq held but not sent. `oldest` tells what the buffer could not
cover; `run_first` is the first seq this producer run published per device, so a jump
across a producer restart is known as `not_produced` rather than `not_held`; `skipped` lists
the seq ranges this run skipped on purpose (paused, or too far behind schedule);
`series_first` is the first seq of the producer's series (before its current run, if it
was restarted), so a subscriber that starts mid-series knows what it never saw;
`withheld` lists, per device, seqs the producer refused to publish and why (a replay row
that is not a valid sample: `invalid_input`; reasons are words of delivery.reasons); `series`
says what the producer publishes (its source, and for a simulation the seed, fleet size and
scenario; for a replay the file; for the live source the host), so a logger can tell a new
series from its file's.

`after_seq`, `limit`, `given_up`, `series_first`, `withheld` and `series` are optional both ways: a
producer that does not know them ignores them, a subscriber that does not know them never
sends them and skips them in answers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from common import schema

if TYPE_CHECKING:
    from common.bus import Dealer

log = logging.getLogger(__name__)

REQUEST = b"catchup"
BATCH = b"batch"
END = b"end"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
PAST_ALL = 2**62  # an `after` seq or `after_ts_ms` past anything: ask for no samples by it


class ProtocolError(ValueError):
    """A catch-up message that does not follow the protocol."""


@dataclass(frozen=True)
class Request:
    """What a subscriber asks for (see the module docstring)."""

    after: dict[str, int]
    after_ts_ms: int
    after_seq: int | None = None  # unlisted devices: seqs above this, not after_ts_ms
    limit: int | None = None  # at most this many samples, the newest


def encode_request(
    after: dict[str, int],
    after_ts_ms: int,
    after_seq: int | None = None,
    limit: int | None = None,
) -> list[bytes]:
    body: dict = {"after": after, "after_ts_ms": after_ts_ms}
    if after_seq is not None:
        body["after_seq"] = after_seq
    if limit is not None:
        body["limit"] = limit
    return [REQUEST, json.dumps(body).encode()]


def decode_request(frames: list[bytes]) -> Request:
    if len(frames) != 2 or frames[0] != REQUEST:
        raise ProtocolError("expected [catchup, json]")
    if len(frames[1]) > MAX_REQUEST_BYTES:
        raise ProtocolError("request too large")
    try:
        body = json.loads(frames[1])
        after = {str(k): int(v) for k, v in body["after"].items()}
        after_ts_ms = int(body["after_ts_ms"])
        after_seq = None if body.get("after_seq") is None else int(body["after_seq"])
        limit = None if body.get("limit") is None else int(body["limit"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"malformed request: {exc}") from None
    if limit is not None and limit < 1:
        raise ProtocolError(f"limit must be >= 1, got {limit}")
    return Request(after, after_ts_ms, after_seq, limit)


def encode_batch(batch: schema.Batch) -> list[bytes]:
    return [BATCH, *schema.encode(batch)[1:]]


@dataclass(frozen=True)
class End:
    """The final message of an answer: what the producer knows beyond the samples it sent."""

    oldest: dict[str, int] = field(default_factory=dict)  # oldest seq held, per device
    run_first: dict[str, int] = field(default_factory=dict)  # first seq of this run
    skipped: list[tuple[int, int]] = field(default_factory=list)  # ranges never produced
    given_up: dict[str, tuple[int, int]] = field(default_factory=dict)  # held, over `limit`
    series_first: int | None = None  # first seq of the series (None: not known)
    withheld: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    series: dict | None = None  # what the producer publishes (None: not said)


def encode_end(end: End) -> list[bytes]:
    body: dict = {
        "oldest": end.oldest,
        "run_first": end.run_first,
        "skipped": [list(r) for r in end.skipped],
        "series_first": end.series_first,
        "withheld": {d: [list(r) for r in ranges] for d, ranges in end.withheld.items()},
    }
    if end.given_up:
        body["given_up"] = {device: list(r) for device, r in end.given_up.items()}
    if end.series is not None:
        body["series"] = end.series
    return [END, json.dumps(body).encode()]


def decode_reply(frames: list[bytes]) -> schema.Batch | End:
    """A batch, or the End that closes an answer."""
    if frames and frames[0] == BATCH:
        return schema.decode([schema.TOPIC, *frames[1:]])
    if len(frames) == 2 and frames[0] == END:
        try:
            body = json.loads(frames[1])
            first = body.get("series_first")
            return End(
                oldest={str(k): int(v) for k, v in body["oldest"].items()},
                run_first={str(k): int(v) for k, v in body["run_first"].items()},
                skipped=[(int(a), int(b)) for a, b in body.get("skipped", [])],
                given_up={
                    str(k): (int(a), int(b)) for k, (a, b) in body.get("given_up", {}).items()
                },
                series_first=None if first is None else int(first),
                withheld={
                    str(d): [(int(a), int(b), str(r)) for a, b, r in ranges]
                    for d, ranges in body.get("withheld", {}).items()
                },
                series=body["series"] if isinstance(body.get("series"), dict) else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"malformed end of catch-up: {exc}") from None
    raise ProtocolError("unexpected catch-up message")


async def ask(
    dealer: Dealer, request: list[bytes], timeout: float
) -> tuple[list[schema.Batch], End] | None:
    """Send `request` and gather the answer: its batches and its End; None (logged) if the
    producer does not answer within `timeout` s of each message, or answers nonsense."""
    await dealer.send(request)
    batches: list[schema.Batch] = []
    while True:
        frames = await dealer.receive(timeout)
        if frames is None:
            log.warning("no answer from the catch-up endpoint %s", dealer.endpoint)
            return None
        try:
            reply = decode_reply(frames)
        except (ProtocolError, schema.MessageError) as exc:
            log.warning("bad catch-up message from %s (%s)", dealer.endpoint, exc)
            dealer.reset()  # a late remainder must not be taken for the next answer
            return None
        if isinstance(reply, End):
            return batches, reply
        batches.append(reply)
