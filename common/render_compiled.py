"""CSV rows and JSON objects written by compiled loops (numba): the fast path of the logger,
the backfill, the broadcaster and the bridges.

render.py builds a fixed-width byte matrix per field and then drops the filler bytes:
about 0.45 us a row, most of it spent moving bytes that are thrown away. These loops write
each byte of the text once, straight into the output (about 0.1 us a CSV row and 0.3 us a
JSON object, against 0.45 and 1.5 for the matrices; nogil). The text is render.py's, byte
for byte (the tests compare the two on random batches). render.csv_rows uses this path
when numba is installed, render.json_objects in the processes that ask for it (the
bridges); both keep their own paths for a batch outside the range these loops handle
(years 1000-9999, values of at most 15 digits, and for JSON, ids that need no escaping).

Compiled code is cached next to this file, or in the user's cache directory (numba's
cache), so a process pays the compilation (~1 s) once per machine and then ~0.15 s to load
it, on its first large batch; where neither is writable, each process compiles it.
"""

from __future__ import annotations

import numpy as np

from common import schema

try:
    import numba
except ImportError:  # an optional speed-up: render.py's numpy path gives the same text
    numba = None

AVAILABLE = numba is not None

# The timestamps the loop formats: years 1000 to 9999, as numpy shows them (four digits).
_FIRST_MS = -30_610_224_000_000  # 1000-01-01 00:00:00 UTC
_END_MS = 253_402_300_800_000  # 10000-01-01 00:00:00 UTC


def _jit(function):
    if not AVAILABLE:
        return function
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # nowhere writable to keep compiled code: compile in each process
        return numba.njit(nogil=True)(function)


@_jit
def _unsigned(out, pos, x):
    """`x` (>= 0, up to 2**64 - 1) in decimal at out[pos:]; returns the position after it.
    All in uint64: numba turns uint64 mixed with a signed integer into a float."""
    ten = np.uint64(10)
    zero = np.uint64(48)
    x = np.uint64(x)
    digits = 1
    rest = x // ten
    while rest > 0:
        rest //= ten
        digits += 1
    end = pos + digits
    i = end - 1
    while True:
        out[i] = zero + x % ten
        x //= ten
        if x == 0:
            break
        i -= 1
    return end


@_jit
def _padded(out, pos, x, width):
    """`x` (>= 0, < 10**width) in exactly `width` digits, leading zeros kept."""
    for i in range(pos + width - 1, pos - 1, -1):
        out[i] = 48 + x % 10
        x //= 10
    return pos + width


@_jit
def _stamp(out, pos, ts_ms, millis):
    """`YYYY-MM-DD HH:MM:SS[.fff]` (UTC), the time floored to the shown unit."""
    days = ts_ms // 86_400_000
    in_day = ts_ms - days * 86_400_000
    # Days to a civil date (proleptic Gregorian), after H. Hinnant's days_from_civil inverse.
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    pos = _padded(out, pos, year, 4)
    out[pos] = 45
    pos = _padded(out, pos + 1, month, 2)
    out[pos] = 45
    pos = _padded(out, pos + 1, day, 2)
    out[pos] = 32
    seconds = in_day // 1000
    pos = _padded(out, pos + 1, seconds // 3600, 2)
    out[pos] = 58
    pos = _padded(out, pos + 1, seconds // 60 % 60, 2)
    out[pos] = 58
    pos = _padded(out, pos + 1, seconds % 60, 2)
    if millis:
        out[pos] = 46
        pos = _padded(out, pos + 1, in_day % 1000, 3)
    return pos


@_jit
def _device(out, pos, raw, row, offset, width):
    """The NUL-padded id at raw[row, offset:offset + width] as a CSV field: quoted, its
    quotes doubled, when it holds a comma or a quote (schema.csv_field)."""
    length = 0
    quote = False
    while length < width and raw[row, offset + length] != 0:
        c = raw[row, offset + length]
        if c == 44 or c == 34:
            quote = True
        length += 1
    if not quote:
        for i in range(length):
            out[pos + i] = raw[row, offset + i]
        return pos + length
    out[pos] = 34
    pos += 1
    for i in range(length):
        c = raw[row, offset + i]
        out[pos] = c
        pos += 1
        if c == 34:
            out[pos] = 34
            pos += 1
    out[pos] = 34
    return pos + 1


@_jit
def _number(out, pos, value, scale, decimals, limit):
    """`value` (not NaN) with `decimals` decimals (render._fixed's text); -1 if it is not
    below `limit` (not exact once scaled, or infinite)."""
    if abs(value) >= limit:
        return -1
    scaled = np.int64(np.rint(value * scale))
    if scaled < 0:
        out[pos] = 45
        pos += 1
        scaled = -scaled
    pos = _unsigned(out, pos, scaled // scale)
    if decimals:
        out[pos] = 46
        pos = _padded(out, pos + 1, scaled % scale, decimals)
    return pos


@_jit
def _value(out, pos, value, scale, decimals, limit):
    """A comma, then `value` as `_number` writes it; NaN as nothing (an empty field)."""
    out[pos] = 44
    if value != value:
        return pos + 1
    return _number(out, pos + 1, value, scale, decimals, limit)


@_jit
def _null(out, pos):
    out[pos] = 110
    out[pos + 1] = 117
    out[pos + 2] = 108
    out[pos + 3] = 108
    return pos + 4


@_jit
def _tick_stamp(out, pos, ts, last_ts, stamp_at, stamp_len, first_ms, end_ms, millis):
    """The timestamp `ts` at out[pos:], copied from the text just written when the row
    shares the previous row's tick (as a tick's devices do); (position after it, where the
    stamp's text is, its length), the position -1 if `ts` is outside years 1000-9999."""
    if ts == last_ts:
        for i in range(stamp_len):
            out[pos + i] = out[stamp_at + i]
        return pos + stamp_len, stamp_at, stamp_len
    if not first_ms <= ts < end_ms:
        return -1, stamp_at, stamp_len
    end = _stamp(out, pos, ts, millis)
    return end, pos, end - pos


@_jit
def _text(out, pos, table, lengths, code):
    for i in range(lengths[code]):
        out[pos + i] = table[code, i]
    return pos + lengths[code]


@_jit
def _rows(
    out,
    raw,
    device_offset,
    device_width,
    ts,
    first_ms,
    end_ms,
    seq,
    metrics,
    decimals,
    limit,
    millis,
    anomaly,
    kinds,
    kind_lengths,
    ids,
    roots,
    event,
    events,
    event_lengths,
    altered,
    sets,
    set_lengths,
):
    """Every row of the batch, comma-separated and newline-ended; returns the length, or -1
    if a value or a timestamp is outside what this loop renders exactly."""
    scale = 10**decimals
    pos = 0
    last_ts = ts[0] - 1
    stamp_at = 0
    stamp_len = 0
    for row in range(seq.shape[0]):
        pos, stamp_at, stamp_len = _tick_stamp(
            out, pos, ts[row], last_ts, stamp_at, stamp_len, first_ms, end_ms, millis
        )
        if pos < 0:
            return -1
        last_ts = ts[row]
        for m in range(4):  # unrolled by the compiler: the four metrics
            pos = _value(out, pos, metrics[m][row], scale, decimals, limit)
            if pos < 0:
                return -1
        out[pos] = 44
        pos = _device(out, pos + 1, raw, row, device_offset, device_width)
        out[pos] = 44
        pos = _unsigned(out, pos + 1, seq[row])
        if (
            anomaly[row] >= len(kind_lengths)
            or event[row] >= len(event_lengths)
            or altered[row] >= len(set_lengths)
        ):
            return -1  # not a known label (no valid batch has one): the numpy path refuses it
        out[pos] = 44
        pos = _text(out, pos + 1, kinds, kind_lengths, anomaly[row])
        out[pos] = 44
        pos += 1
        if ids[row] > 0:
            pos = _unsigned(out, pos, ids[row])
        out[pos] = 44
        pos += 1
        if roots[row] > 0:
            pos = _unsigned(out, pos, roots[row])
        out[pos] = 44
        pos = _text(out, pos + 1, events, event_lengths, event[row])
        out[pos] = 44
        pos = _text(out, pos + 1, sets, set_lengths, altered[row])
        out[pos] = 10
        pos += 1
    return pos


def _table(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode() for t in texts]
    table = np.zeros((len(encoded), max(1, *map(len, encoded))), np.uint8)
    for i, text in enumerate(encoded):
        table[i, : len(text)] = np.frombuffer(text, np.uint8)
    return table, np.array([len(t) for t in encoded], np.int64)


_KINDS = _table(["", *schema.ANOMALY_KINDS])
_EVENTS = _table(["", *schema.EVENT_KINDS])
_METRIC_SETS = _table(list(schema.METRIC_SETS))
_DEVICE_OFFSET = schema.RECORD.fields["device"][1]
# Bytes a row can take at most, with room to spare: stamp, four metrics (a sign, a point and
# at most 16 digits each), an id quoted with every byte a doubled quote, seq and two anomaly
# ids (20 digits each), the two labels, the metrics an anomaly alters, separators.
_ROW_BOUND = 23 + 4 * 31 + 2 + 2 * schema.DEVICE_MAX_BYTES + 3 * 20 + 2 * 16 + 22 + 12
assert len(schema.METRIC_SETS[-1]) <= 22, "the longest anomaly_metrics text fits the bound"


def csv_rows(batch: schema.Batch) -> bytes | None:
    """The batch's CSV rows, each ending in a newline (render.csv_rows's text); None if a
    timestamp is outside years 1000-9999 or a value is not exact once scaled to its decimals
    (see render._exact), for the caller's other paths."""
    if not len(batch):
        return b""
    rows = np.ascontiguousarray(batch.rows)
    raw = rows.view(np.uint8).reshape(len(rows), rows.dtype.itemsize)
    out = np.empty(len(rows) * _ROW_BOUND, np.uint8)
    length = _rows(
        out,
        raw,
        _DEVICE_OFFSET,
        schema.DEVICE_MAX_BYTES,
        rows["ts_ms"],
        _FIRST_MS,
        _END_MS,
        rows["seq"],
        tuple(rows[metric] for metric in schema.METRICS),
        batch.decimals,
        float(10 ** (15 - batch.decimals)),
        batch.precision == schema.MILLISECONDS,
        rows["anomaly"],
        *_KINDS,
        rows["anomaly_id"],
        rows["anomaly_root"],
        rows["event"],
        *_EVENTS,
        rows["anomaly_metrics"],
        *_METRIC_SETS,
    )
    return out[:length].tobytes() if length >= 0 else None


@_jit
def _json_value(out, pos, value, scale, decimals, limit):
    """`value` as `_number` writes it, NaN as null."""
    if value != value:
        return _null(out, pos)
    return _number(out, pos, value, scale, decimals, limit)


@_jit
def _json_id(out, pos, value):
    """An anomaly id, or null for none (0)."""
    if value > 0:
        return _unsigned(out, pos, value)
    return _null(out, pos)


@_jit
def _json_device(out, pos, raw, row, offset, width):
    """The NUL-padded id at raw[row, offset:offset + width] as a JSON string; -1 if it holds
    a byte JSON escapes (a quote, a backslash, a control character): render.py quotes those."""
    out[pos] = 34
    pos += 1
    length = 0
    while length < width and raw[row, offset + length] != 0:
        c = raw[row, offset + length]
        if c == 34 or c == 92 or c < 32:
            return -1
        out[pos + length] = c
        length += 1
    out[pos + length] = 34
    return pos + length + 1


@_jit
def _json_rows(
    out,
    raw,
    device_offset,
    device_width,
    ts,
    first_ms,
    end_ms,
    seq,
    metrics,
    keys,
    key_lengths,
    decimals,
    limit,
    millis,
    anomaly,
    kinds,
    kind_lengths,
    ids,
    roots,
    event,
    events,
    event_lengths,
    altered,
    sets,
    set_lengths,
    fields,
    field_lengths,
):
    """Every row of the batch as one JSON object (render._matrix_json's text), each ending
    in a newline; returns the length, or -1 if a value, a timestamp or a device id is
    outside what this loop renders exactly. `keys` are the shown metrics' `,"name":`
    texts; `fields` the other keys' texts in order: timestamp, device, seq, anomaly,
    anomaly_id, anomaly_root, event, anomaly_metrics."""
    scale = 10**decimals
    pos = 0
    last_ts = ts[0] - 1
    stamp_at = 0
    stamp_len = 0
    for row in range(seq.shape[0]):
        pos = _text(out, pos, fields, field_lengths, 0)
        pos, stamp_at, stamp_len = _tick_stamp(
            out, pos, ts[row], last_ts, stamp_at, stamp_len, first_ms, end_ms, millis
        )
        if pos < 0:
            return -1
        last_ts = ts[row]
        out[pos] = 34
        pos += 1
        for m in range(metrics.shape[0]):
            pos = _text(out, pos, keys, key_lengths, m)
            pos = _json_value(out, pos, metrics[m, row], scale, decimals, limit)
            if pos < 0:
                return -1
        pos = _text(out, pos, fields, field_lengths, 1)
        pos = _json_device(out, pos, raw, row, device_offset, device_width)
        if pos < 0:
            return -1
        pos = _text(out, pos, fields, field_lengths, 2)
        pos = _unsigned(out, pos, seq[row])
        if (
            anomaly[row] >= len(kind_lengths)
            or event[row] >= len(event_lengths)
            or altered[row] >= len(set_lengths)
        ):
            return -1  # not a known label (no valid batch has one): the numpy path refuses it
        pos = _text(out, pos, fields, field_lengths, 3)
        pos = _text(out, pos, kinds, kind_lengths, anomaly[row])
        pos = _text(out, pos, fields, field_lengths, 4)
        pos = _json_id(out, pos, ids[row])
        pos = _text(out, pos, fields, field_lengths, 5)
        pos = _json_id(out, pos, roots[row])
        pos = _text(out, pos, fields, field_lengths, 6)
        pos = _text(out, pos, events, event_lengths, event[row])
        pos = _text(out, pos, fields, field_lengths, 7)
        pos = _text(out, pos, sets, set_lengths, altered[row])
        out[pos] = 125
        out[pos + 1] = 10
        pos += 2
    return pos


def _quoted(texts: tuple[str, ...]) -> list[str]:
    return ["null", *(f'"{t}"' for t in texts)]


_JSON_KINDS = _table(_quoted(schema.ANOMALY_KINDS))
_JSON_EVENTS = _table(_quoted(schema.EVENT_KINDS))
_JSON_METRIC_SETS = _table(_quoted(schema.METRIC_SETS[1:]))
_JSON_FIELDS = _table(
    [
        '{"timestamp":"',
        ',"device":',
        ',"seq":',
        ',"anomaly":',
        ',"anomaly_id":',
        ',"anomaly_root":',
        ',"event":',
        ',"anomaly_metrics":',
    ]
)
# Bytes a JSON object can take at most, with room to spare: the CSV row's bound, plus
# the keys, quotes and nulls.
_JSON_ROW_BOUND = _ROW_BOUND + 160


def json_lines(batch: schema.Batch, metrics: tuple[str, ...] = schema.METRICS) -> bytes | None:
    """One JSON object per sample (render.json_objects's text), each ending in a newline;
    None if a timestamp is outside years 1000-9999, a value is not exact once scaled to its
    decimals (see render._exact) or a device id needs escaping, for the caller's other paths."""
    if not len(batch):
        return b""
    rows = np.ascontiguousarray(batch.rows)
    raw = rows.view(np.uint8).reshape(len(rows), rows.dtype.itemsize)
    out = np.empty(len(rows) * _JSON_ROW_BOUND, np.uint8)
    shown = np.empty((len(metrics), len(rows)), np.float64)
    for i, metric in enumerate(metrics):
        shown[i] = rows[metric]
    length = _json_rows(
        out,
        raw,
        _DEVICE_OFFSET,
        schema.DEVICE_MAX_BYTES,
        rows["ts_ms"],
        _FIRST_MS,
        _END_MS,
        rows["seq"],
        shown,
        *_metric_keys(metrics),
        batch.decimals,
        float(10 ** (15 - batch.decimals)),
        batch.precision == schema.MILLISECONDS,
        rows["anomaly"],
        *_JSON_KINDS,
        rows["anomaly_id"],
        rows["anomaly_root"],
        rows["event"],
        *_JSON_EVENTS,
        rows["anomaly_metrics"],
        *_JSON_METRIC_SETS,
        *_JSON_FIELDS,
    )
    return out[:length].tobytes() if length >= 0 else None


_KEYS: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}


def _metric_keys(metrics: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The shown metrics' keys (`,"cpu":` ...) as a table, made once."""
    found = _KEYS.get(metrics)
    if found is None:
        texts = [f',"{m}":' for m in metrics]
        found = _KEYS[metrics] = _table(texts) if texts else _table([""])
    return found
