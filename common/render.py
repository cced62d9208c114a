"""Samples as CSV rows and JSON objects, rendered for whole batches at once.

Every field is written into a fixed-width byte matrix (one row per sample, unused
positions holding a filler byte), the matrices are placed side by side with the
separators, and the filler bytes are dropped in one pass. No per-sample Python runs,
which is what lets the logger and the backfill write millions of rows per second.
Numpy's fixed cost (~0.8 ms a batch) would dominate a tick of a few samples, so small
batches are formatted row by row in Python, to the very same text.
The CSV and the JSON of a sample show the very same text for every value.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache

import numpy as np

from common import schema

_FILL = 0
_MAX_EXACT = 10**15  # beyond this, one-decimal floats are not exact in int64 tenths
SMALL_BATCH = 64  # up to this many samples, Python per row is faster than numpy per batch


def _literal(text: bytes, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text, np.uint8), (n, len(text)))


_FOUR_DIGITS = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], np.uint8)


def _digits(numbers: np.ndarray) -> np.ndarray:
    """Non-negative integers (< 2**63) as right-aligned ASCII digits, no leading zeros."""
    numbers = numbers.astype(np.int64)
    width = len(str(int(numbers.max()))) if len(numbers) else 1
    groups = -(-width // 4)
    padded = np.empty((len(numbers), groups * 4), np.uint8)
    rest = numbers
    for group in range(groups - 1, -1, -1):  # four digits per division: a table lookup each
        rest, chunk = np.divmod(rest, 10_000)
        padded[:, group * 4 : group * 4 + 4] = _FOUR_DIGITS[chunk]
    out = padded[:, groups * 4 - width :]
    if width > 1:
        # Position p holds a leading zero when the number is below 10**(width - 1 - p).
        limits = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
        limits[-1] = 0  # the last digit always shows, even for 0
        out = np.where(numbers[:, None] < limits[None, :], np.uint8(_FILL), out)
    return out


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


def _one_decimal(values: np.ndarray, missing: bytes) -> np.ndarray:
    """Values already rounded to 0.1 as `-12.3`; NaN as `missing`."""
    nan = np.isnan(values)
    tenths = np.round(np.where(nan, 0.0, values) * 10).astype(np.int64)
    negative = tenths < 0
    magnitude = np.abs(tenths)
    whole = _digits(magnitude // 10)
    out = np.concatenate(
        [
            np.where(negative, ord("-"), _FILL).astype(np.uint8)[:, None],
            whole,
            _literal(b".", len(values)),
            ((magnitude % 10).astype(np.uint8) + ord("0"))[:, None],
        ],
        axis=1,
    )
    return _or_missing(out, nan, missing)


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


def _devices(rows: np.ndarray) -> np.ndarray:
    """Device ids as a matrix only as wide as the longest one in the batch."""
    n = len(rows)
    matrix = np.ascontiguousarray(rows["device"]).view(np.uint8).reshape(n, schema.DEVICE_MAX_BYTES)
    used = np.flatnonzero(matrix.any(axis=0))
    return matrix[:, : used[-1] + 1] if len(used) else matrix[:, :1]


def _exact(batch: schema.Batch) -> bool:
    rows = batch.rows
    return all(not (np.abs(rows[m]) >= _MAX_EXACT).any() for m in schema.METRICS)  # NaN: False


@lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _tenths(value: float, missing: str) -> str:
    """As `_one_decimal` does it: round to int64 tenths, then print them."""
    if value != value:
        return missing
    tenths = round(value * 10)
    whole, digit = divmod(abs(tenths), 10)
    return f"-{whole}.{digit}" if tenths < 0 else f"{whole}.{digit}"


def _small_fields(batch: schema.Batch, missing: str, quote: str) -> list[list[str]]:
    """Per sample: timestamp, the four metrics, device, seq, anomaly, anomaly_id as text."""
    kinds = [missing, *(f"{quote}{k}{quote}" for k in schema.ANOMALY_KINDS)]
    millis = batch.precision == schema.MILLISECONDS
    out = []
    for ts, seq, device, cpu, mem, disk, net, kind, _, anomaly_id in batch.rows.tolist():
        seconds, ms = divmod(ts, 1000)
        stamp = f"{_second(seconds)}.{ms:03d}" if millis else _second(seconds)
        values = [_tenths(v, missing) for v in (cpu, mem, disk, net)]
        label = str(anomaly_id) if anomaly_id else missing
        out.append([stamp, *values, device.decode("ascii"), str(seq), kinds[kind], label])
    return out


def _small_csv(batch: schema.Batch) -> bytes:
    return "".join(",".join(f) + "\n" for f in _small_fields(batch, "", "")).encode()


def _small_json(batch: schema.Batch, metrics: tuple[str, ...]) -> list[bytes]:
    shown = [i for i, m in enumerate(schema.METRICS) if m in metrics]
    out = []
    for f in _small_fields(batch, "null", '"'):
        values = "".join(f',"{schema.METRICS[i]}":{f[1 + i]}' for i in shown)
        out.append(
            f'{{"timestamp":"{f[0]}"{values},"device":"{f[5]}","seq":{f[6]},'
            f'"anomaly":{f[7]},"anomaly_id":{f[8]}}}'.encode()
        )
    return out


def csv_rows(batch: schema.Batch) -> bytes:
    """CSV rows (no header), each ending in a newline; missing values are empty fields."""
    n = len(batch)
    if not n:
        return b""
    if not _exact(batch):
        return schema.to_csv(batch).encode()
    if n <= SMALL_BATCH:
        return _small_csv(batch)
    return _matrix_csv(batch)


def _matrix_csv(batch: schema.Batch) -> bytes:
    n = len(batch)
    rows = batch.rows
    comma = _literal(b",", n)
    parts = [_timestamps(batch)]
    for metric in schema.METRICS:
        parts += [comma, _one_decimal(rows[metric], b"")]
    parts += [
        comma,
        _devices(rows),
        comma,
        _digits(rows["seq"]),
        comma,
        _table([b"", *(k.encode() for k in schema.ANOMALY_KINDS)], rows["anomaly"]),
        comma,
        _ids(rows["anomaly_id"], b""),
        _literal(b"\n", n),
    ]
    return _join(parts)


def json_objects(batch: schema.Batch, metrics: tuple[str, ...] = schema.METRICS) -> list[bytes]:
    """One compact JSON object per sample (UTF-8): timestamp, the metrics (all by default,
    in the contract's order), device, seq, anomaly, anomaly_id."""
    n = len(batch)
    if not n:
        return []
    if not _exact(batch):
        return [_only(line, metrics) for line in schema.to_json(batch)]
    if n <= SMALL_BATCH:
        return _small_json(batch, metrics)
    return _matrix_json(batch, metrics)


def _matrix_json(batch: schema.Batch, metrics: tuple[str, ...]) -> list[bytes]:
    n = len(batch)
    rows = batch.rows
    parts = [_literal(b'{"timestamp":"', n), _timestamps(batch), _literal(b'"', n)]
    for metric in metrics:
        parts += [_literal(f',"{metric}":'.encode(), n), _one_decimal(rows[metric], b"null")]
    kinds = [b"null", *(b'"' + k.encode() + b'"' for k in schema.ANOMALY_KINDS)]
    parts += [
        _literal(b',"device":"', n),
        _devices(rows),
        _literal(b'","seq":', n),
        _digits(rows["seq"]),
        _literal(b',"anomaly":', n),
        _table(kinds, rows["anomaly"]),
        _literal(b',"anomaly_id":', n),
        _ids(rows["anomaly_id"], b"null"),
        _literal(b"}\n", n),
    ]
    return _join(parts).split(b"\n")[:-1]


def _only(line: str, metrics: tuple[str, ...]) -> bytes:
    """The reference rendering of a sample, without the metrics not asked for."""
    if metrics == schema.METRICS:
        return line.encode()
    sample = json.loads(line)
    for metric in schema.METRICS:
        if metric not in metrics:
            del sample[metric]
    return json.dumps(sample, separators=(",", ":")).encode()
