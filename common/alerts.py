"""The one wire format of detectors' alerts on ZeroMQ, from broadcasters to the scorer.

A message carries a batch of alerts as packed records, like samples (common.schema):

    [b"alerts", header (magic SALR, version, source, first number, count), records]

`source` is a random number per sending process and `first` numbers the message's
alerts (the next message starts where this one ended), so the scorer sees alerts lost on
the way (a scorer restarted, a full queue) as a jump, never in silence.
"""

from __future__ import annotations

import struct

import numpy as np

from common import schema

TOPIC = b"alerts"
NO_SEQ = -1  # the alert names its sample by timestamp
NO_TIME = np.iinfo(np.int64).min  # ... by seq
RECORD = np.dtype(
    [
        ("device", schema.DEVICE_DTYPE),  # UTF-8, NUL-padded, a valid device id
        ("detector", "S64"),  # the detector's name, UTF-8, NUL-padded
        ("seq", "<i8"),  # the sample's seq, or NO_SEQ
        ("ts_ms", "<i8"),  # the sample's timestamp, or NO_TIME
        ("score", "<f8"),  # NaN: none given
        ("kind", "u1"),  # 0: no guess, else 1 + index in schema.ANOMALY_KINDS
        ("received_ms", "<i8"),  # when the broadcaster took it (wall clock)
    ]
)
_MAGIC = b"SALR"
_VERSION = 1
_HEADER = struct.Struct("<4sB3xQQI")
MAX_ALERTS_PER_MESSAGE = 100_000


def encode(records: np.ndarray, source: int, first: int) -> list[bytes]:
    records = np.ascontiguousarray(records, dtype=RECORD)
    header = _HEADER.pack(_MAGIC, _VERSION, source, first, len(records))
    return [TOPIC, header, records.tobytes()]


def decode(frames: list[bytes]) -> tuple[int, int, np.ndarray]:
    """(source, number of the first alert, records); MessageError on anything else."""
    if len(frames) != 3 or bytes(frames[0]) != TOPIC:
        raise schema.MessageError("not an alerts message")
    header, body = bytes(frames[1]), frames[2]
    if len(header) != _HEADER.size:
        raise schema.MessageError(f"alerts header must be {_HEADER.size} bytes")
    magic, version, source, first, count = _HEADER.unpack(header)
    if magic != _MAGIC or version != _VERSION:
        raise schema.MessageError(f"not an alerts message of version {_VERSION}")
    if count > MAX_ALERTS_PER_MESSAGE or len(body) != count * RECORD.itemsize:
        raise schema.MessageError(f"alerts body does not hold {count} alerts")
    records = np.frombuffer(body, dtype=RECORD)
    if len(records):
        if (records["kind"] > len(schema.ANOMALY_KINDS)).any():
            raise schema.MessageError("unknown kind code in an alert")
        for device in np.unique(records["device"]).tolist():
            problem = schema.stored_device_problem(device)
            if problem:
                raise schema.MessageError(problem)
    return source, first, records
