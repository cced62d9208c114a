"""The catch-up protocol: how a subscriber asks the producer for samples it missed.

ZeroMQ PUB/SUB drops what a subscriber misses while it is down or slow. The producer
keeps recent samples and answers on a ROUTER socket (the ZeroMQ Guide's "Clone" pattern):

    request  [b"catchup", JSON {"after": {device: last seq held}, "after_ts_ms": int}]
    reply    [b"batch", header, records] ...   (schema frames without the topic)
             [b"end", JSON {"oldest": {device: oldest seq kept}, "run_first": {...}}]

`after` asks, per device, for every sample with a greater seq; devices the subscriber has
never seen are sent from `after_ts_ms` on. `oldest` tells what the buffer could not
cover; `run_first` is the first seq this producer run published per device, so a jump
across a producer restart is known as "not produced" rather than "lost"; `skipped` lists
the seq ranges this run skipped on purpose (paused, or too far behind schedule).
"""

from __future__ import annotations

import json

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


def encode_end(
    oldest: dict[str, int], run_first: dict[str, int], skipped: list[tuple[int, int]] = ()
) -> list[bytes]:
    body = {"oldest": oldest, "run_first": run_first, "skipped": [list(r) for r in skipped]}
    return [END, json.dumps(body).encode()]


def decode_reply(
    frames: list[bytes],
) -> schema.Batch | tuple[dict[str, int], dict[str, int], list[tuple[int, int]]]:
    """A batch, or (oldest, run_first, skipped seq ranges) for the final message."""
    if frames and frames[0] == BATCH:
        return schema.decode([schema.TOPIC, *frames[1:]])
    if len(frames) == 2 and frames[0] == END:
        try:
            body = json.loads(frames[1])
            oldest = {str(k): int(v) for k, v in body["oldest"].items()}
            run_first = {str(k): int(v) for k, v in body["run_first"].items()}
            skipped = [(int(a), int(b)) for a, b in body.get("skipped", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"malformed end of catch-up: {exc}") from None
        return oldest, run_first, skipped
    raise ProtocolError("unexpected catch-up message")
