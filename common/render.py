"""Samples as CSV rows and JSON objects, rendered for whole batches at once.

Every field is written into a fixed-width byte matrix (one row per sample, unused
positions holding a filler byte), the matrices are placed side by side with the
separators, and the filler bytes are dropped in one pass. No per-sample Python runs,
which is what lets the logger and the backfill write millions of rows per second.
Numpy's fixed cost (~0.8 ms a batch) would dominate a tick of a few samples, so small
batches are formatted row by row in Python, to the very same text.
The CSV and the JSON of a sample show the very same text for every value. Large
batches' CSV rows and JSON objects are written by compiled loops where numba is installed
(common/render_compiled.py), to the very same text.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from common import schema

_FILL = 0
SMALL_BATCH = 64  # up to this many samples, Python per row is faster than numpy per batch
CHUNK_ROWS = 10_000  # larger batches are rendered in chunks of this many rows
# CSV rows of larger batches come from a compiled loop when numba is installed: imported on
# the first such batch, since numba costs ~0.1 s and ~120 MB that small streams never need.
_COMPILED = importlib.util.find_spec("numba") is not None
# JSON objects too, in the processes that ask for it (the bridges, whose rate rests on it;
# not the broadcaster, which renders ticks of at most its clients' rates and stays lean):
# the loop is made ready in a thread on the first large batch (from numba's cache ~0.3 s,
# compiled on a fresh machine 2-5 s), and the numpy matrices render meanwhile, rather
# than every message waiting for the compiler.
_json_wanted = False
_json_loop: Callable[..., bytes | None] | None = None
_json_warming = threading.Lock()
_json_started = False
_json_tried = threading.Event()  # the thread has finished, made ready or not


def _literal(text: bytes, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text, np.uint8), (n, len(text)))


_FOUR_DIGITS = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], np.uint8)
# The same without leading zeros (filler instead): the most significant group of a number;
# _TOP shows 0 as "0" (a number that is 0), _UPPER as nothing (a group above the number).
_TOP = np.array([list(f"{i:>4d}".replace(" ", "\0").encode()) for i in range(10_000)], np.uint8)
_UPPER = _TOP.copy()
_UPPER[0] = _FILL


def _digits(numbers: np.ndarray) -> np.ndarray:
    """Non-negative integers (seqs and ids: up to 2**64 - 1) as right-aligned ASCII digits,
    no leading zeros: one table lookup per four digits."""
    numbers = numbers.astype(np.uint64 if numbers.dtype.kind == "u" else np.int64)
    width = len(str(int(numbers.max()))) if len(numbers) else 1
    groups = -(-width // 4)
    if groups == 1:
        return _TOP[numbers][:, 4 - width :]
    padded = np.empty((len(numbers), groups * 4), np.uint8)
    rest = numbers
    for group in range(groups - 1, -1, -1):  # from the least significant four digits
        rest, chunk = np.divmod(rest, 10_000)
        # Zero-padded where more digits follow on the left, else as the number's top group.
        top = _TOP if group == groups - 1 else _UPPER
        padded[:, group * 4 : group * 4 + 4] = np.where(
            (rest > 0)[:, None], _FOUR_DIGITS[chunk], top[chunk]
        )
    return padded[:, groups * 4 - width :]


def _or_missing(matrix: np.ndarray, missing_rows: np.ndarray, missing: bytes) -> np.ndarray:
    """Replace the rows flagged in `missing_rows` by the `missing` text."""
    if not missing_rows.any():
        return matrix
    if matrix.shape[1] < len(missing):
        pad = np.full((len(matrix), len(missing) - matrix.shape[1]), _FILL, np.uint8)
        matrix = np.concatenate([pad, matrix], axis=1)
    blank = np.full(matrix.shape[1], _FILL, np.uint8)
    blank[: len(missing)] = np.frombuffer(missing, np.uint8)
    matrix[missing_rows] = blank
    return matrix


def _padded(numbers: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers below 10**width as exactly `width` ASCII digits, zeros kept."""
    out = np.empty((len(numbers), width), np.uint8)
    rest = numbers
    for position in range(width - 1, -1, -1):
        rest, digit = np.divmod(rest, 10)
        out[:, position] = digit.astype(np.uint8) + ord("0")
    return out


def _fixed(values: np.ndarray, decimals: int, missing: bytes) -> np.ndarray:
    """Values already rounded to `decimals` decimals as `-12.3`; NaN as `missing`."""
    nan = np.isnan(values)
    scale = 10**decimals
    scaled = np.round(np.where(nan, 0.0, values) * scale).astype(np.int64)
    negative = scaled < 0
    magnitude = np.abs(scaled)
    parts = [_digits(magnitude // scale)]
    if negative.any():  # rare: no sign column otherwise
        parts.insert(0, np.where(negative, ord("-"), _FILL).astype(np.uint8)[:, None])
    if decimals:
        parts += [_literal(b".", len(values)), _padded(magnitude % scale, decimals)]
    return _or_missing(np.concatenate(parts, axis=1), nan, missing)


def _table(texts: list[bytes], codes: np.ndarray) -> np.ndarray:
    """Look up short texts by code, as a matrix."""
    width = max(1, max(len(t) for t in texts))
    table = np.zeros((len(texts), width), np.uint8)
    for i, text in enumerate(texts):
        table[i, : len(text)] = np.frombuffer(text, np.uint8)
    return table[codes]


def _timestamps(batch: schema.Batch) -> np.ndarray:
    """Each distinct timestamp formatted once (a tick's devices share it)."""
    ts = batch.rows["ts_ms"]
    steps = np.diff(ts)
    if (steps >= 0).all():  # the usual case, ticks in order: runs instead of a sort
        new = np.r_[True, steps != 0]
        unique, inverse = ts[new], np.cumsum(new) - 1
    else:
        unique, inverse = np.unique(ts, return_inverse=True)
    text = schema.format_timestamps(schema.Batch(_stamp_rows(unique), batch.precision))
    encoded = np.char.encode(text, "ascii")
    matrix = encoded.view(np.uint8).reshape(len(unique), encoded.dtype.itemsize)
    return matrix[inverse]


def _stamp_rows(ts: np.ndarray) -> np.ndarray:
    rows = schema.empty_rows(len(ts))
    rows["ts_ms"] = ts
    return rows


def _ids(ids: np.ndarray, missing: bytes) -> np.ndarray:
    """Anomaly ids; most samples have none, so only the others are formatted."""
    labelled = ids > 0
    if labelled.all():
        return _digits(ids)
    width = len(missing)
    if labelled.any():
        digits = _digits(ids[labelled])
        width = max(width, digits.shape[1])
    out = np.full((len(ids), width), _FILL, np.uint8)
    out[~labelled, : len(missing)] = np.frombuffer(missing, np.uint8)
    if labelled.any():
        out[labelled, width - digits.shape[1] :] = digits
    return out


def _join(parts: list[np.ndarray]) -> bytes:
    matrix = np.concatenate(parts, axis=1)
    flat = matrix.ravel()
    return flat[flat != _FILL].tobytes()


_SPECIAL = np.zeros(256, bool)  # bytes that make an id need quoting (CSV) or escaping (JSON)
_SPECIAL[[ord(","), ord('"'), ord("\\")]] = True


def _devices(rows: np.ndarray, quoted: Callable[[str], str]) -> np.ndarray:
    """Device ids as `quoted` shows them, as a matrix only as wide as the longest one.

    Ids without a comma, quote or backslash are the usual case and are copied as they are
    stored (UTF-8); the batch's others are quoted once per distinct id.
    """
    n = len(rows)
    matrix = np.ascontiguousarray(rows["device"]).view(np.uint8).reshape(n, -1)
    used = np.flatnonzero(matrix.any(axis=0))
    matrix = matrix[:, : used[-1] + 1] if len(used) else matrix[:, :1]
    if _SPECIAL[matrix].any():
        distinct, inverse = np.unique(rows["device"], return_inverse=True)
        texts = [quoted(schema.device_name(d)).encode() for d in distinct]
        return _table(texts, inverse)
    if quoted is schema.json_string:
        quote = _literal(b'"', n)
        return np.concatenate([quote, matrix, quote], axis=1)
    return matrix


def _exact(batch: schema.Batch) -> bool:  # render_compiled checks the same, value by value
    """Whether every value, scaled to its decimals, is an integer float64 holds exactly (15
    digits: at 16, v * 10**decimals can miss the last digit the reference prints)."""
    limit = 10 ** (15 - batch.decimals)
    rows = batch.rows
    return all(not (np.abs(rows[m]) >= limit).any() for m in schema.METRICS)  # NaN: False


@lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _fixed_text(value: float, decimals: int, missing: str) -> str:
    """As `_fixed` does it: round to int64 units of the last decimal, then print them."""
    if value != value:
        return missing
    scale = 10**decimals
    scaled = round(value * scale)
    whole, fraction = divmod(abs(scaled), scale)
    sign = "-" if scaled < 0 else ""
    return f"{sign}{whole}.{fraction:0{decimals}d}" if decimals else f"{sign}{whole}"


def _small_fields(batch: schema.Batch, missing: str, quote: str) -> list[list[str]]:
    """Per sample, the text of each column in schema.COLUMNS."""
    kinds = [missing, *(f"{quote}{k}{quote}" for k in schema.ANOMALY_KINDS)]
    events = [missing, *(f"{quote}{k}{quote}" for k in schema.EVENT_KINDS)]
    altered = schema.metric_set_names(missing, quote).tolist()
    millis = batch.precision == schema.MILLISECONDS
    decimals = batch.decimals
    quoted = schema.json_string if quote else schema.csv_field
    out = []
    for ts, seq, device, *values, kind, mask, anomaly_id, root, event in batch.rows.tolist():
        seconds, ms = divmod(ts, 1000)
        stamp = f"{_second(seconds)}.{ms:03d}" if millis else _second(seconds)
        out.append(
            [
                stamp,
                *(_fixed_text(v, decimals, missing) for v in values),
                quoted(device.decode("utf-8", "replace")),
                str(seq),
                kinds[kind],
                str(anomaly_id) if anomaly_id else missing,
                str(root) if root else missing,
                events[event],
                altered[mask],
            ]
        )
    return out


def _small_csv(batch: schema.Batch) -> bytes:
    return "".join(",".join(f) + "\n" for f in _small_fields(batch, "", "")).encode()


def _small_json(batch: schema.Batch, metrics: tuple[str, ...]) -> list[bytes]:
    shown = [i for i, m in enumerate(schema.METRICS) if m in metrics]
    out = []
    for f in _small_fields(batch, "null", '"'):
        values = "".join(f',"{schema.METRICS[i]}":{f[1 + i]}' for i in shown)
        out.append(
            f'{{"timestamp":"{f[0]}"{values},"device":{f[5]},"seq":{f[6]},'
            f'"anomaly":{f[7]},"anomaly_id":{f[8]},"anomaly_root":{f[9]},"event":{f[10]},'
            f'"anomaly_metrics":{f[11]}}}'.encode()
        )
    return out


def csv_rows(batch: schema.Batch) -> bytes:
    """CSV rows (no header), each ending in a newline; missing values are empty fields."""
    n = len(batch)
    if not n:
        return b""
    if n > SMALL_BATCH and _COMPILED:
        from common import render_compiled

        text = render_compiled.csv_rows(batch)
        if text is not None:
            return text
    if not _exact(batch):
        return schema.to_csv(batch).encode()
    if n <= SMALL_BATCH:
        return _small_csv(batch)
    if n > CHUNK_ROWS:  # the matrices of a chunk stay in cache: 0.52 us a row, not 0.76
        rows = batch.rows
        return b"".join(
            _matrix_csv(batch.with_rows(rows[i : i + CHUNK_ROWS])) for i in range(0, n, CHUNK_ROWS)
        )
    return _matrix_csv(batch)


def _matrix_csv(batch: schema.Batch) -> bytes:
    n = len(batch)
    rows = batch.rows
    comma = _literal(b",", n)
    parts = [_timestamps(batch)]
    for metric in schema.METRICS:
        parts += [comma, _fixed(rows[metric], batch.decimals, b"")]
    parts += [
        comma,
        _devices(rows, schema.csv_field),
        comma,
        _digits(rows["seq"]),
        comma,
        _table([b"", *(k.encode() for k in schema.ANOMALY_KINDS)], rows["anomaly"]),
        comma,
        _ids(rows["anomaly_id"], b""),
        comma,
        _ids(rows["anomaly_root"], b""),
        comma,
        _table([b"", *(k.encode() for k in schema.EVENT_KINDS)], rows["event"]),
        comma,
        _table([t.encode() for t in schema.METRIC_SETS], rows["anomaly_metrics"]),
        _literal(b"\n", n),
    ]
    return _join(parts)


def json_objects(batch: schema.Batch, metrics: tuple[str, ...] = schema.METRICS) -> list[bytes]:
    """One compact JSON object per sample (UTF-8): timestamp, the metrics (all by default,
    in the contract's order), device, seq, then the labels: anomaly, anomaly_id,
    anomaly_root, event and anomaly_metrics."""
    n = len(batch)
    if not n:
        return []
    if n > SMALL_BATCH and _json_wanted:
        loop = _json_loop or _warm_json()
        text = loop(batch, metrics) if loop is not None else None
        if text is not None:
            return text.split(b"\n")[:-1]
    if not _exact(batch):
        return [_only(line, metrics) for line in schema.to_json(batch)]
    if n <= SMALL_BATCH:
        return _small_json(batch, metrics)
    return _matrix_json(batch, metrics)


def prefer_compiled_json() -> None:
    """Render large batches' JSON with the compiled loop from now on, where numba is
    installed (once it is ready: see `_warm_json`)."""
    global _json_wanted
    _json_wanted = _COMPILED


def _warm_json() -> Callable[..., bytes | None] | None:
    """The compiled JSON loop if ready; else None, after starting (once) a thread that makes
    it ready."""
    global _json_started
    with _json_warming:
        if not _json_started:
            _json_started = True
            threading.Thread(target=_make_json_loop, name="render-compile", daemon=True).start()
    return _json_loop


def _make_json_loop() -> None:
    global _json_loop
    try:
        from common import render_compiled

        rows = schema.empty_rows(SMALL_BATCH + 1)
        render_compiled.json_lines(schema.Batch(rows, schema.MILLISECONDS))  # compile or load
        _json_loop = render_compiled.json_lines
    finally:
        _json_tried.set()  # if it failed, the numpy matrices go on rendering


def wait_for_compiled_json(timeout: float = 60.0) -> bool:
    """Start making the compiled JSON loop ready and wait for it (tests, benchmarks); False
    without numba or past `timeout`."""
    if not _COMPILED:
        return False
    prefer_compiled_json()
    _warm_json()
    _json_tried.wait(timeout)
    return _json_loop is not None


def _matrix_json(batch: schema.Batch, metrics: tuple[str, ...]) -> list[bytes]:
    n = len(batch)
    rows = batch.rows
    parts = [_literal(b'{"timestamp":"', n), _timestamps(batch), _literal(b'"', n)]
    for metric in metrics:
        parts += [
            _literal(f',"{metric}":'.encode(), n),
            _fixed(rows[metric], batch.decimals, b"null"),
        ]
    kinds = [b"null", *(b'"' + k.encode() + b'"' for k in schema.ANOMALY_KINDS)]
    events = [b"null", *(b'"' + k.encode() + b'"' for k in schema.EVENT_KINDS)]
    parts += [
        _literal(b',"device":', n),
        _devices(rows, schema.json_string),
        _literal(b',"seq":', n),
        _digits(rows["seq"]),
        _literal(b',"anomaly":', n),
        _table(kinds, rows["anomaly"]),
        _literal(b',"anomaly_id":', n),
        _ids(rows["anomaly_id"], b"null"),
        _literal(b',"anomaly_root":', n),
        _ids(rows["anomaly_root"], b"null"),
        _literal(b',"event":', n),
        _table(events, rows["event"]),
        _literal(b',"anomaly_metrics":', n),
        _table(_METRIC_SETS_JSON, rows["anomaly_metrics"]),
        _literal(b"}\n", n),
    ]
    return _join(parts).split(b"\n")[:-1]


_METRIC_SETS_JSON = [b"null", *(b'"' + t.encode() + b'"' for t in schema.METRIC_SETS[1:])]


def _only(line: str, metrics: tuple[str, ...]) -> bytes:
    """The reference rendering of a sample, without the metrics not asked for."""
    if metrics == schema.METRICS:
        return line.encode()
    sample = json.loads(line)
    for metric in schema.METRICS:
        if metric not in metrics:
            del sample[metric]
    return json.dumps(sample, separators=(",", ":")).encode()
