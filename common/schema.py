"""The one wire schema: what a sample is, its bytes on ZeroMQ, its JSON and its CSV row.

Nothing else in the project knows the byte layout of a message. A message carries a
batch of samples (usually one tick: one sample per device) as a packed numpy record
array, so encoding and decoding cost no per-sample Python work.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

# The topic of a message of samples: TOPIC for whole batches, `group.<g>` (two hex digits;
# see common.shards) for the samples of one device group, `shard.<n>.<i>` for those of
# shard i of n (the groups g with g % n == i - 1).
TOPIC = b"samples"
METRICS: tuple[str, ...] = ("cpu", "mem", "disk_io", "net")
COLUMNS: tuple[str, ...] = ("timestamp", *METRICS, "device", "seq", "anomaly", "anomaly_id")
# Ground-truth labels: code 0 is "no anomaly"; the order is part of the wire format.
ANOMALY_KINDS: tuple[str, ...] = (
    "spike",
    "dip",
    "level_shift",
    "drift",
    "stuck",
    "dropout",
    "noise_burst",
    "memory_leak",
    "incident",
)
CSV_HEADER = ",".join(COLUMNS)
DEVICE_MAX_BYTES = 16

# Timestamp precision: whole seconds while the per-device rate is <= 1 Hz, milliseconds above.
SECONDS = 0
MILLISECONDS = 3

RECORD = np.dtype(
    [
        ("ts_ms", "<i8"),  # sample time, milliseconds since the Unix epoch (UTC)
        ("seq", "<u8"),  # per-device sequence number, +1 per sample
        ("device", f"S{DEVICE_MAX_BYTES}"),
        ("cpu", "<f8"),  # values are already rounded to one decimal; NaN means "no value"
        ("mem", "<f8"),
        ("disk_io", "<f8"),
        ("net", "<f8"),
        ("anomaly", "u1"),  # 0: none, else 1 + index in ANOMALY_KINDS
        ("anomaly_metrics", "u1"),  # bit i set: METRICS[i] altered by the anomaly
        ("anomaly_id", "<u8"),  # the same for every sample of one anomaly event; 0: none
    ]
)

_GROUP_TOPIC = re.compile(rb"group\.[0-9a-f]{2}|shard\.[0-9a-f]{2}\.[0-9a-f]{2}")
_MAGIC = b"SSIM"
_VERSION = 2
_HEADER = struct.Struct("<4sBBHI")  # magic, version, precision, reserved, row count
# Senders (simulation, replay, catch-up) split what they send into messages of at most
# ROWS_PER_MESSAGE samples; receivers refuse messages of more than MAX_ROWS_PER_MESSAGE.
ROWS_PER_MESSAGE = 100_000
MAX_ROWS_PER_MESSAGE = 10 * ROWS_PER_MESSAGE


class MessageError(ValueError):
    """A message from the network is not a valid sample batch."""


@dataclass(frozen=True)
class Batch:
    """Samples in publication order, with the timestamp precision they are shown at."""

    rows: np.ndarray  # RECORD dtype
    precision: int = SECONDS

    def __len__(self) -> int:
        return len(self.rows)


def merge(batches: list[Batch]) -> list[Batch]:
    """Join consecutive batches of the same precision, so they are rendered in one go."""
    merged: list[Batch] = []
    run: list[Batch] = []
    for batch in batches:
        if run and batch.precision != run[0].precision:
            merged.append(_join(run))
            run = []
        run.append(batch)
    if run:
        merged.append(_join(run))
    return merged


def _join(run: list[Batch]) -> Batch:
    if len(run) == 1:
        return run[0]
    return Batch(rows=np.concatenate([b.rows for b in run]), precision=run[0].precision)


def precision_for_rate(rate: float) -> int:
    """Seconds are enough to keep timestamps unique up to 1 Hz per device; above, milliseconds."""
    return SECONDS if rate <= 1 else MILLISECONDS


def empty_rows(count: int) -> np.ndarray:
    return np.zeros(count, dtype=RECORD)


def topic(group: int) -> bytes:
    """The topic of a message holding the samples of one device group."""
    return b"group.%02x" % group


def shard_topic(index: int, count: int) -> bytes:
    """The topic of a message holding the samples of shard `index` of `count`."""
    return b"shard.%02x.%02x" % (count, index)


def encode(batch: Batch, group: int | None = None) -> list[bytes]:
    """Frames of one ZeroMQ multipart message: topic, header, packed records."""
    rows = np.ascontiguousarray(batch.rows, dtype=RECORD)
    header = _HEADER.pack(_MAGIC, _VERSION, batch.precision, 0, len(rows))
    return [TOPIC if group is None else topic(group), header, rows.tobytes()]


def decode(frames: list[bytes]) -> Batch:
    """Parse a multipart message; raise MessageError, never anything else, on bad input."""
    if len(frames) != 3:
        raise MessageError(f"expected 3 frames, got {len(frames)}")
    subject, header, body = frames
    if subject != TOPIC and not _GROUP_TOPIC.fullmatch(bytes(subject[:32])):
        raise MessageError(f"unexpected topic {bytes(subject[:32])!r}")
    if len(header) != _HEADER.size:
        raise MessageError(f"header must be {_HEADER.size} bytes, got {len(header)}")
    magic, version, precision, _, count = _HEADER.unpack(header)
    if magic != _MAGIC:
        raise MessageError(f"bad magic {magic!r}")
    if version != _VERSION:
        raise MessageError(f"unsupported schema version {version}, expected {_VERSION}")
    if precision not in (SECONDS, MILLISECONDS):
        raise MessageError(f"bad timestamp precision {precision}")
    if count > MAX_ROWS_PER_MESSAGE:
        raise MessageError(f"too many rows: {count} > {MAX_ROWS_PER_MESSAGE}")
    if len(body) != count * RECORD.itemsize:
        raise MessageError(
            f"body is {len(body)} bytes, expected {count} rows x {RECORD.itemsize} bytes"
        )
    rows = np.frombuffer(body, dtype=RECORD)
    _validate(rows)
    return Batch(rows=rows, precision=precision)


_MAX_TS_MS = 253_402_300_799_999  # 9999-12-31 23:59:59.999


def _validate(rows: np.ndarray) -> None:
    """Reject what would render as invalid JSON or CSV downstream."""
    if not len(rows):
        return
    ts = rows["ts_ms"]
    if ts.min() < 0 or ts.max() > _MAX_TS_MS:
        raise MessageError("timestamp out of range")
    device = np.ascontiguousarray(rows["device"]).view(np.uint8)
    if _FORBIDDEN_DEVICE_BYTE[device].any():
        raise MessageError('device id must be printable ASCII without , or "')
    for metric in METRICS:
        if np.isinf(rows[metric]).any():
            raise MessageError(f"{metric} is infinite")
    if rows["anomaly"].max() > len(ANOMALY_KINDS):
        raise MessageError("unknown anomaly kind")


_FORBIDDEN_DEVICE_BYTE = np.zeros(256, bool)  # a lookup table: one pass over the bytes
_FORBIDDEN_DEVICE_BYTE[[*range(1, 32), ord(","), ord('"'), ord("\\"), *range(128, 256)]] = True


def format_timestamps(batch: Batch) -> np.ndarray:
    """`YYYY-MM-DD HH:MM:SS[.fff]` in UTC, vectorized."""
    unit = "s" if batch.precision == SECONDS else "ms"
    # Floor to the unit so that a timestamp never shows a later second than it happened in.
    stamps = batch.rows["ts_ms"].astype("datetime64[ms]").astype(f"datetime64[{unit}]")
    return np.strings.replace(np.datetime_as_string(stamps, unit=unit), "T", " ")


def format_values(values: np.ndarray, missing: str) -> np.ndarray:
    """One decimal, like the spec's example; NaN (no value) becomes `missing`."""
    text = np.char.mod("%.1f", values)
    nan = np.isnan(values)
    if nan.any():
        text = np.where(nan, missing, text)
    return text


def kind_names(missing: str) -> np.ndarray:
    """Lookup table from anomaly code to its text, `missing` for code 0."""
    return np.array([missing, *ANOMALY_KINDS], dtype=object)


def metric_names(mask: int) -> list[str]:
    return [m for i, m in enumerate(METRICS) if mask & (1 << i)]


def _columns(batch: Batch, missing: str, quote: str) -> list[np.ndarray | list]:
    rows = batch.rows
    kinds = kind_names(missing)
    kinds[1:] = [f"{quote}{k}{quote}" for k in ANOMALY_KINDS]
    ids = rows["anomaly_id"]
    return [
        format_timestamps(batch).tolist(),
        *(format_values(rows[m], missing).tolist() for m in METRICS),
        np.char.decode(rows["device"], "ascii").tolist(),
        rows["seq"].tolist(),
        kinds[rows["anomaly"]].tolist(),
        np.where(ids > 0, ids.astype(str), missing).tolist(),
    ]


_JSON_ROW = (
    '{{"timestamp":"{}","cpu":{},"mem":{},"disk_io":{},"net":{},"device":"{}","seq":{},'
    '"anomaly":{},"anomaly_id":{}}}'
)


def to_json(batch: Batch) -> list[str]:
    """One compact JSON object per sample; the five contract keys come first, in order."""
    if not len(batch):
        return []
    fmt = _JSON_ROW.format
    return [fmt(*row) for row in zip(*_columns(batch, "null", '"'), strict=True)]


def to_csv(batch: Batch) -> str:
    """CSV rows (no header) ending in a newline; empty fields where a value is missing."""
    if not len(batch):
        return ""
    lines = [",".join(map(str, row)) for row in zip(*_columns(batch, "", ""), strict=True)]
    return "\n".join(lines) + "\n"
