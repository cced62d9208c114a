"""The catch-up protocol: how a subscriber asks the producer for samples it missed.

ZeroMQ PUB/SUB drops what a subscriber misses while it is down or slow. The producer
keeps recent samples and answers on a ROUTER socket (the ZeroMQ Guide's "Clone" pattern):

    request  [b"catchup", JSON {"after": {device: last seq held}, "after_ts_ms": int}]
    reply    [b"batch", header, records] ...   (schema frames without the topic)
             [b"end", JSON {"oldest": {device: oldest seq kept}, "run_first": {...},
                            "skipped": [[first, last], ...], "series_first": seq,
                            "withheld": {device: [[first, last, reason], ...]}}]

`after` asks, per device, for every sample with a greater seq; devices the subscriber has
never seen are sent from `after_ts_ms` on. `oldest` tells what the buffer could not
cover; `run_first` is the first seq this producer run published per device, so a jump
across a producer restart is known as "not produced" rather than "lost"; `skipped` lists
the seq ranges this run skipped on purpose (paused, or too far behind schedule);
`series_first` is the first seq of the producer's series (before its current run, if it
was restarted), so a subscriber that starts mid-series knows what it never saw;
`withheld` lists, per device, seqs the producer refused to publish and why (a replay row
that is not a valid sample: "invalid_input").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from common import schema

REQUEST = b"catchup"
BATCH = b"batch"
END = b"end"
MAX_REQUEST_BYTES = 4 * 1024 * 1024


class ProtocolError(ValueError):
    """A catch-up message that does not follow the protocol."""


def encode_request(after: dict[str, int], after_ts_ms: int) -> list[bytes]:
    return [REQUEST, json.dumps({"after": after, "after_ts_ms": after_ts_ms}).encode()]


def decode_request(frames: list[bytes]) -> tuple[dict[str, int], int]:
    if len(frames) != 2 or frames[0] != REQUEST:
        raise ProtocolError("expected [catchup, json]")
    if len(frames[1]) > MAX_REQUEST_BYTES:
        raise ProtocolError("request too large")
    try:
        body = json.loads(frames[1])
        after = {str(k): int(v) for k, v in body["after"].items()}
        after_ts_ms = int(body["after_ts_ms"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"malformed request: {exc}") from None
    return after, after_ts_ms


def encode_batch(batch: schema.Batch) -> list[bytes]:
    return [BATCH, *schema.encode(batch)[1:]]


@dataclass(frozen=True)
class End:
    """What a producer says, after the samples, about those it cannot send."""

    oldest: dict[str, int] = field(default_factory=dict)  # oldest seq held, per device
    run_first: dict[str, int] = field(default_factory=dict)  # first seq of this run
    skipped: list[tuple[int, int]] = field(default_factory=list)  # ranges never produced
    series_first: int | None = None  # first seq of the series (None: not known)
    withheld: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)


def encode_end(end: End) -> list[bytes]:
    body = {
        "oldest": end.oldest,
        "run_first": end.run_first,
        "skipped": [list(r) for r in end.skipped],
        "series_first": end.series_first,
        "withheld": {d: [list(r) for r in ranges] for d, ranges in end.withheld.items()},
    }
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
                series_first=None if first is None else int(first),
                withheld={
                    str(d): [(int(a), int(b), str(r)) for a, b, r in ranges]
                    for d, ranges in body.get("withheld", {}).items()
                },
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"malformed end of catch-up: {exc}") from None
    raise ProtocolError("unexpected catch-up message")
