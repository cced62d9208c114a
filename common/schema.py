"""The one wire schema: what a sample is, its bytes on ZeroMQ, its JSON and its CSV row.

Nothing else in the project knows the byte layout of a message. A message carries a
batch of samples (usually one tick: one sample per device) as a packed numpy record
array, so encoding and decoding cost no per-sample Python work.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from common.layout import DEVICE_BYTES, Layouts

# The topic of a message of samples: TOPIC for whole batches, `group.<g>` (two hex digits;
# see common.shards) for the samples of one device group, `shard.<n>.<i>` for those of
# shard i of n (the groups g with g % n == i - 1).
TOPIC = b"samples"
METRICS: tuple[str, ...] = ("cpu", "mem", "disk_io", "net")
COLUMNS: tuple[str, ...] = (
    "timestamp",
    *METRICS,
    "device",
    "seq",
    "anomaly",
    "anomaly_id",
    "anomaly_root",
    "event",
    "anomaly_metrics",  # last, so a log written before it reads as a prefix of these columns
)
# The CSV header of logs written before `anomaly_metrics` existed: readers take such logs
# (the column reads as empty), and a logger moves such a file aside before appending.
LEGACY_COLUMNS: tuple[str, ...] = COLUMNS[:-1]
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
    "window",  # imported from a benchmark's labels (NAB windows): the kind is not known
)
# Planned, expected episodes (scenario files): labelled apart from anomalies, which they are
# not; code 0 is "none"; the order is part of the wire format.
EVENT_KINDS: tuple[str, ...] = ("maintenance", "deploy", "load_test")
CSV_HEADER = ",".join(COLUMNS)
LEGACY_CSV_HEADER = ",".join(LEGACY_COLUMNS)
# Device ids: 1 to 64 bytes of UTF-8, printable (no control or format characters), no space
# at either end. Stored NUL-padded, so a NUL can never be part of an id.
DEVICE_MAX_BYTES = 64
DEVICE_DTYPE = np.dtype(f"S{DEVICE_MAX_BYTES}")
assert DEVICE_MAX_BYTES == DEVICE_BYTES, "common.layout compares device ids as words"
# Values are shown with this many decimals unless a batch says otherwise (replay keeps the
# precision of its source file).
DECIMALS = 1
MAX_DECIMALS = 12

# Timestamp precision: whole seconds while the per-device rate is <= 1 Hz, milliseconds above.
SECONDS = 0
MILLISECONDS = 3

RECORD = np.dtype(
    [
        ("ts_ms", "<i8"),  # sample time, milliseconds since the Unix epoch (UTC)
        ("seq", "<u8"),  # per-device sequence number, +1 per sample
        ("device", DEVICE_DTYPE),  # UTF-8, NUL-padded
        ("cpu", "<f8"),  # rounded to the batch's decimals; NaN means "no value"
        ("mem", "<f8"),
        ("disk_io", "<f8"),
        ("net", "<f8"),
        ("anomaly", "u1"),  # 0: none, else 1 + index in ANOMALY_KINDS
        ("anomaly_metrics", "u1"),  # bit i set: METRICS[i] altered by the anomaly; 0: none
        ("anomaly_id", "<u8"),  # the same for every sample of one anomaly event; 0: none
        ("anomaly_root", "<u8"),  # anomaly_id of the root cause (itself for the root); 0: none
        ("event", "u1"),  # 0: none, else 1 + index in EVENT_KINDS
    ]
)

_GROUP_TOPIC = re.compile(rb"group\.[0-9a-f]{2}|shard\.[0-9a-f]{2}\.[0-9a-f]{2}")
_MAGIC = b"SSIM"
_VERSION = 3
_HEADER = struct.Struct("<4sBBBBI")  # magic, version, precision, decimals, reserved, row count
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
    decimals: int = DECIMALS  # of the values, as they are shown in CSV and JSON

    def __len__(self) -> int:
        return len(self.rows)

    def with_rows(self, rows: np.ndarray) -> Batch:
        """Other rows, shown like these."""
        return Batch(rows=rows, precision=self.precision, decimals=self.decimals)


def merge(batches: list[Batch]) -> list[Batch]:
    """Join consecutive batches shown alike (precision, decimals), so they render in one go."""
    merged: list[Batch] = []
    run: list[Batch] = []
    for batch in batches:
        if run and (batch.precision, batch.decimals) != (run[0].precision, run[0].decimals):
            merged.append(_join(run))
            run = []
        run.append(batch)
    if run:
        merged.append(_join(run))
    return merged


def _join(run: list[Batch]) -> Batch:
    if len(run) == 1:
        return run[0]
    return Batch(
        rows=concat([b.rows for b in run]), precision=run[0].precision, decimals=run[0].decimals
    )


def concat(parts: list[np.ndarray]) -> np.ndarray:
    """Records joined, as bytes: numpy joins structured arrays field by field, ~5x slower."""
    raw = [np.ascontiguousarray(p, dtype=RECORD).view(np.uint8) for p in parts]
    return np.concatenate(raw).view(RECORD)


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
    header = _HEADER.pack(_MAGIC, _VERSION, batch.precision, batch.decimals, 0, len(rows))
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
    magic, version, precision, decimals, _, count = _HEADER.unpack(header)
    if magic != _MAGIC:
        raise MessageError(f"bad magic {magic!r}")
    if version != _VERSION:
        raise MessageError(
            f"unsupported wire format version {version}, expected {_VERSION}: "
            "run the same release of producer and subscribers"
        )
    if precision not in (SECONDS, MILLISECONDS):
        raise MessageError(f"bad timestamp precision {precision}")
    if decimals > MAX_DECIMALS:
        raise MessageError(f"bad decimals {decimals}, at most {MAX_DECIMALS}")
    if count > MAX_ROWS_PER_MESSAGE:
        raise MessageError(f"too many rows: {count} > {MAX_ROWS_PER_MESSAGE}")
    if len(body) != count * RECORD.itemsize:
        raise MessageError(
            f"body is {len(body)} bytes, expected {count} rows x {RECORD.itemsize} bytes"
        )
    rows = np.frombuffer(body, dtype=RECORD)
    try:
        validate(rows)
    except ValueError as exc:
        raise MessageError(str(exc)) from None
    return Batch(rows=rows, precision=precision, decimals=decimals)


def salvage(frames: list[bytes]) -> np.ndarray | None:
    """From a message decode() refused: the rows whose device id is valid, so a subscriber
    can say which samples it could not accept; None if not even that can be read."""
    if len(frames) != 3 or len(frames[1]) != _HEADER.size:
        return None
    magic, version, _, _, _, count = _HEADER.unpack(frames[1])
    body = frames[2]
    if magic != _MAGIC or version != _VERSION or count > MAX_ROWS_PER_MESSAGE:
        return None
    if len(body) != count * RECORD.itemsize:
        return None
    rows = np.frombuffer(body, dtype=RECORD)
    names, inverse = np.unique(rows["device"], return_inverse=True)
    valid = np.array([_device_ok(bytes(n)) for n in names], bool)
    return rows[valid[inverse]] if len(rows) else rows


def _device_ok(stored: bytes) -> bool:
    try:
        name = stored.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in stored.rstrip(b"\0") and device_problem(name) is None


_MAX_TS_MS = 253_402_300_799_999  # 9999-12-31 23:59:59.999
# Each metric's domain; NaN ("no value") is allowed everywhere.
DOMAINS: dict[str, tuple[float, float]] = {
    "cpu": (0.0, 100.0),
    "mem": (0.0, 100.0),
    "disk_io": (0.0, float("inf")),
    "net": (0.0, float("inf")),
}


def device_problem(name: str) -> str | None:
    """Why `name` cannot be a device id, or None if it can."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if not name:
        return "device id is empty"
    if size > DEVICE_MAX_BYTES:
        return f"device id {name!r} is {size} bytes of UTF-8, at most {DEVICE_MAX_BYTES}"
    if not name.isprintable():  # refuses control, format and separator characters but " "
        return f"device id {name!r} holds a control or format character"
    if name != name.strip():
        return f"device id {name!r} starts or ends with a space"
    return None


def device_bytes(name: str) -> bytes:
    """A device id as it is stored; raise ValueError if it is not a valid one."""
    problem = device_problem(name)
    if problem:
        raise ValueError(problem)
    return name.encode("utf-8")


def device_name(stored: bytes) -> str:
    """A stored device id as text (stored ids are valid UTF-8: decode() checked them)."""
    return bytes(stored).rstrip(b"\0").decode("utf-8", "replace")


def device_array(names: list[str]) -> np.ndarray:
    """Device ids as the record's device column type; raise ValueError on an invalid one."""
    return np.array([device_bytes(n) for n in names], dtype=DEVICE_DTYPE)


def seq_spans(rows: np.ndarray) -> dict[str, tuple[int, int]]:
    """(lowest, highest) seq of each device among `rows`."""
    if not len(rows):
        return {}
    names, inverse = np.unique(rows["device"], return_inverse=True)
    seqs = rows["seq"].astype(np.int64)
    low = np.full(len(names), np.iinfo(np.int64).max)
    high = np.full(len(names), np.iinfo(np.int64).min)
    np.minimum.at(low, inverse, seqs)
    np.maximum.at(high, inverse, seqs)
    return {
        device_name(n): (int(a), int(b))
        for n, a, b in zip(names, low.tolist(), high.tolist(), strict=True)
    }


def validate(rows: np.ndarray) -> None:
    """Raise ValueError naming the first problem if `rows` hold a sample that is not valid.

    The one definition of a valid sample: producers check what they publish with it, and
    subscribers what they receive, so nothing published is ever refused downstream.
    """
    for _, bad, describe in _rules(rows):
        if bad is not None:
            raise ValueError(describe(int(np.argmax(bad))))


def invalid_rows(rows: np.ndarray) -> np.ndarray:
    """Which rows are not valid samples (a bool mask), by the very rules of validate()."""
    found = np.zeros(len(rows), bool)
    for _, bad, _ in _rules(rows):
        if bad is not None:
            found |= bad
    return found


def problems(rows: np.ndarray) -> list[tuple[str, np.ndarray, str]]:
    """Each rule the rows break: (its name, the rows that break it, what is wrong with the
    first of them), in the order validate() checks them."""
    return [
        (rule, bad, describe(int(np.argmax(bad))))
        for rule, bad, describe in _rules(rows)
        if bad is not None
    ]


Rule = tuple[str, np.ndarray | None, Callable[[int], str]]


def _rules(rows: np.ndarray) -> Iterator[Rule]:
    """The rules of a valid sample, lazily: (name, mask of the rows breaking it or None if
    none does, the problem of row i). Cheap whole-column reductions come first, so a valid
    batch costs a few passes and no mask."""
    if not len(rows):
        return
    ts = _column(rows, "ts_ms")
    out_of_range = None
    if ts.min() < 0 or ts.max() > _MAX_TS_MS:
        out_of_range = (ts < 0) | (ts > _MAX_TS_MS)
    yield "timestamp", out_of_range, lambda i: f"timestamp {ts[i]} ms is out of range"
    devices = rows["device"]
    yield "device", _bad_devices(devices), lambda i: str(stored_device_problem(devices[i]))
    for metric in METRICS:
        values = _column(rows, metric)
        yield metric, _outside(values, *DOMAINS[metric]), _value_problem(metric, values)
    for label, kinds in (("anomaly", ANOMALY_KINDS), ("event", EVENT_KINDS)):
        codes = _column(rows, label)
        unknown = codes > len(kinds) if codes.max() > len(kinds) else None
        yield label, unknown, lambda i, codes=codes, label=label: f"unknown {label} code {codes[i]}"
    # A label is a kind and an event id together (a log's windows are built from both).
    kind, ids = _column(rows, "anomaly"), _column(rows, "anomaly_id")
    half = (kind == 0) != (ids == 0)
    yield (
        "label",
        half if half.any() else None,
        lambda i: f"anomaly code {kind[i]} with anomaly_id {ids[i]}: a label needs both or neither",
    )
    # The metrics an anomaly alters: bits of METRICS only, and only on an anomaly's samples.
    mask = _column(rows, "anomaly_metrics")
    stray = None
    if mask.any():  # usually few labelled samples, or none: then nothing more to look at
        bad = (mask > METRIC_SETS_MAX) | ((mask != 0) & (kind == 0))
        stray = bad if bad.any() else None
    yield (
        "anomaly_metrics",
        stray,
        lambda i: (
            f"anomaly_metrics {mask[i]} with anomaly code {kind[i]}: bits of the "
            f"{len(METRICS)} metrics, on an anomaly's samples only"
        ),
    )


def _column(rows: np.ndarray, name: str) -> np.ndarray:
    """A field of the records; of a long batch as a contiguous copy, since reductions over a
    record's strided field cost several times as much as the copy does."""
    field = rows[name]
    return np.ascontiguousarray(field) if len(field) > 256 else field


def _outside(values: np.ndarray, low: float, high: float) -> np.ndarray | None:
    """The values outside [low, high] or infinite (NaN, no value, is inside)."""
    smallest, largest = float(np.fmin.reduce(values)), float(np.fmax.reduce(values))  # no NaN
    if not (smallest < low or largest > high or math.isinf(smallest) or math.isinf(largest)):
        return None
    return (values < low) | (values > high) | np.isinf(values)


def _value_problem(metric: str, values: np.ndarray) -> Callable[[int], str]:
    def describe(i: int) -> str:
        value = values[i]
        shown = "infinite" if np.isinf(value) else f"{value:g}"
        return f"{metric} {shown} is outside its domain {domain_text(metric)}"

    return describe


def domain_text(metric: str) -> str:
    """A metric's domain as shown in messages: `[0, 100]` or `>= 0`."""
    low, high = DOMAINS[metric]
    return f"[{low:g}, {high:g}]" if high != float("inf") else f">= {low:g}"


def stored_device_problem(stored: bytes) -> str | None:
    """Why a stored (NUL-padded) device id is not a valid one, or None if it is."""
    raw = bytes(stored).rstrip(b"\0")
    if b"\0" in raw:
        return "device id holds a NUL byte"
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"device id {raw!r} is not UTF-8"
    return device_problem(name)


def _bad_devices(devices: np.ndarray) -> np.ndarray | None:
    """The rows whose device id is not valid (None: all are).

    A column that repeats the devices of a tick already found valid (the same fleet, tick
    after tick) is recognised in one comparison of 64-bit words (common.layout). Otherwise
    printable ASCII ids pass a byte table in one pass; only other ids are decoded; and
    only the bytes in use are looked at (ids are mostly far shorter than 64 bytes).
    """
    if _checked.known(devices):
        return None
    n = len(devices)
    words = np.ascontiguousarray(devices).view(np.uint64).reshape(n, -1)
    # The words in use; in long batches a column at a time (numpy's reduction along axis 0
    # is then several times slower), in short ones in one call.
    if n > 256:
        used = next((k + 1 for k in range(words.shape[1] - 1, 0, -1) if words[:, k].any()), 1)
    else:
        used = int(np.flatnonzero(words.any(axis=0))[-1:].sum()) + 1
    matrix = words[:, :used].view(np.uint8)
    bad = matrix[:, 0] == 0  # empty
    # NUL padding must be trailing only: an id cannot hold a NUL.
    bad |= ((matrix[:, :-1] == 0) & (matrix[:, 1:] != 0)).any(axis=1)
    last_byte = matrix[np.arange(n), np.maximum((matrix != 0).sum(axis=1) - 1, 0)]
    bad |= (matrix[:, 0] == 0x20) | (last_byte == 0x20)  # a space at either end
    other = np.flatnonzero(~bad & _NOT_PLAIN_ASCII[matrix].any(axis=1))
    if len(other):
        names, inverse = np.unique(devices[other], return_inverse=True)
        refused = np.array([stored_device_problem(name) is not None for name in names])
        bad[other] = refused[inverse]
    if bad.any():
        return bad
    _checked.remember(devices)
    return None


_checked = Layouts()  # tick layouts whose device ids were all found valid
_NOT_PLAIN_ASCII = np.ones(256, bool)  # a lookup table: printable ASCII (and NUL padding) pass
_NOT_PLAIN_ASCII[[0, *range(0x20, 0x7F)]] = False


def format_timestamps(batch: Batch) -> np.ndarray:
    """`YYYY-MM-DD HH:MM:SS[.fff]` in UTC, vectorized."""
    unit = "s" if batch.precision == SECONDS else "ms"
    # Floor to the unit so that a timestamp never shows a later second than it happened in.
    stamps = batch.rows["ts_ms"].astype("datetime64[ms]").astype(f"datetime64[{unit}]")
    return np.strings.replace(np.datetime_as_string(stamps, unit=unit), "T", " ")


def format_timestamp(ts_ms: int, precision: int) -> str:
    """One timestamp as format_timestamps shows it, in Python: for one or two (a window's
    start and end), numpy's fixed cost per call (~25 us) is all there is to pay."""
    seconds, ms = divmod(ts_ms, 1000)
    try:
        moment = time.gmtime(seconds)
    except (OverflowError, OSError, ValueError):
        moment = None
    if moment is None or not 1000 <= moment.tm_year <= 9999:  # as numpy pads or widens it
        rows = empty_rows(1)
        rows["ts_ms"] = ts_ms
        return str(format_timestamps(Batch(rows, precision))[0])
    text = time.strftime("%Y-%m-%d %H:%M:%S", moment)
    return f"{text}.{ms:03d}" if precision == MILLISECONDS else text


def format_values(values: np.ndarray, missing: str, decimals: int = DECIMALS) -> np.ndarray:
    """`decimals` decimals (one, like the spec's example, unless the source had more); NaN
    (no value) becomes `missing`."""
    text = np.char.mod(f"%.{decimals}f", values + 0.0)  # -0.0 shows as 0.0, as in render
    nan = np.isnan(values)
    if nan.any():
        text = np.where(nan, missing, text)
    return text


def csv_field(text: str) -> str:
    """`text` as one CSV field: quoted (quotes doubled) when it holds a comma or a quote."""
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def json_string(text: str) -> str:
    """`text` as a JSON string, UTF-8 kept as it is (ids hold no control characters)."""
    return json.dumps(text, ensure_ascii=False)


def kind_names(missing: str, kinds: tuple[str, ...] = ANOMALY_KINDS) -> np.ndarray:
    """Lookup table from a label code to its text, `missing` for code 0."""
    return np.array([missing, *kinds], dtype=object)


def metric_names(mask: int) -> list[str]:
    return [m for i, m in enumerate(METRICS) if mask & (1 << i)]


# Every value of `anomaly_metrics` as text, by bit mask: `cpu`, `cpu|mem`, ...; "" for 0
# (no anomaly, or one whose metrics are not known: a replayed log from before the column).
METRIC_SETS_MAX = (1 << len(METRICS)) - 1
METRIC_SETS: tuple[str, ...] = tuple("|".join(metric_names(m)) for m in range(METRIC_SETS_MAX + 1))


def metric_set_names(missing: str, quote: str = "") -> np.ndarray:
    """Lookup table from an `anomaly_metrics` mask to its text, `missing` for 0."""
    return np.array([missing, *(f"{quote}{t}{quote}" for t in METRIC_SETS[1:])], dtype=object)


def _columns(batch: Batch, missing: str, quote: str) -> list[np.ndarray | list]:
    rows = batch.rows
    kinds = kind_names(missing)
    kinds[1:] = [f"{quote}{k}{quote}" for k in ANOMALY_KINDS]
    events = kind_names(missing, EVENT_KINDS)
    events[1:] = [f"{quote}{k}{quote}" for k in EVENT_KINDS]
    device = json_string if quote else csv_field
    return [
        format_timestamps(batch).tolist(),
        *(format_values(rows[m], missing, batch.decimals).tolist() for m in METRICS),
        [device(device_name(d)) for d in rows["device"]],
        rows["seq"].tolist(),
        kinds[rows["anomaly"]].tolist(),
        _ids(rows["anomaly_id"], missing),
        _ids(rows["anomaly_root"], missing),
        events[rows["event"]].tolist(),
        metric_set_names(missing, quote)[rows["anomaly_metrics"]].tolist(),
    ]


def _ids(ids: np.ndarray, missing: str) -> list[str]:
    return np.where(ids > 0, ids.astype(str), missing).tolist()


_JSON_ROW = (
    '{{"timestamp":"{}","cpu":{},"mem":{},"disk_io":{},"net":{},"device":{},"seq":{},'
    '"anomaly":{},"anomaly_id":{},"anomaly_root":{},"event":{},"anomaly_metrics":{}}}'
)


def to_json(batch: Batch) -> list[str]:
    """The reference JSON, one compact object per sample; the five contract keys come first,
    in order. common.render makes the same text faster."""
    if not len(batch):
        return []
    fmt = _JSON_ROW.format
    return [fmt(*row) for row in zip(*_columns(batch, "null", '"'), strict=True)]


def to_csv(batch: Batch) -> str:
    """The reference CSV rows (no header) ending in a newline; empty fields where a value is
    missing. common.render makes the same text faster."""
    if not len(batch):
        return ""
    lines = [",".join(map(str, row)) for row in zip(*_columns(batch, "", ""), strict=True)]
    return "\n".join(lines) + "\n"
