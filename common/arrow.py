"""Samples as typed Arrow columns: the CSV's columns, without turning values into text.

A batch of RECORD rows becomes a `pyarrow.RecordBatch` with numpy and Arrow kernels
only (no per-sample Python), so a backfill writes Parquet faster than it renders CSV.
The columns are `common.schema.COLUMNS`, in order, and hold what the CSV shows:
timestamps floored to the batch's precision (seconds up to 1 Hz), values as the float64
the CSV text parses back to, null where the CSV has an empty field. A column added to
the schema without an Arrow type here fails at import, never silently goes missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from common import schema

# Milliseconds whatever the rate: Parquet has no seconds unit (Arrow would coerce it to
# milliseconds on write anyway), and one type for every file is simpler to consume.
TIMESTAMP = pa.timestamp("ms", tz="UTC")
DEVICE = pa.dictionary(pa.int32(), pa.string())
LABEL = pa.dictionary(pa.int8(), pa.string())


def _timestamp(batch: schema.Batch) -> pa.Array:
    """Floored like the CSV's text: a sample never shows a later second than it happened in."""
    ts = batch.rows["ts_ms"]
    if batch.precision == schema.SECONDS:
        ts = ts - ts % 1000
    return pa.array(ts, TIMESTAMP)


def _metric(name: str) -> Callable[[schema.Batch], pa.Array]:
    def column(batch: schema.Batch) -> pa.Array:
        values = batch.rows[name]
        return pa.array(values, pa.float64(), mask=np.isnan(values))

    return column


def _device(batch: schema.Batch) -> pa.Array:
    """Dictionary-encoded by Arrow's hash kernel; only the distinct ids are decoded (UTF-8)."""
    raw = np.ascontiguousarray(batch.rows["device"])
    width = raw.dtype.itemsize
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(raw), [None, pa.py_buffer(raw.view(np.uint8))]
    )
    encoded = fixed.dictionary_encode()
    # numpy's bytes type pads with NUL bytes, which a device id never contains.
    names = pc.utf8_rtrim(encoded.dictionary.cast(pa.binary()).cast(pa.string()), "\0")
    return pa.DictionaryArray.from_arrays(encoded.indices, names)


def _seq(batch: schema.Batch) -> pa.Array:
    """int64 like the CSV reads back; a seq never reaches 2**63 (checked, not wrapped)."""
    return pa.array(batch.rows["seq"]).cast(pa.int64())


def _label(name: str, kinds: tuple[str, ...]) -> Callable[[schema.Batch], pa.Array]:
    """The text of a label code from a fixed dictionary (every kind in wire order, or every
    set of metrics by mask); null for code 0: none."""
    dictionary = pa.array(kinds, pa.string())

    def column(batch: schema.Batch) -> pa.Array:
        codes = batch.rows[name]
        indices = pa.array(codes.astype(np.int8) - 1, pa.int8(), mask=codes == 0)
        return pa.DictionaryArray.from_arrays(indices, dictionary)

    return column


def _id(name: str) -> Callable[[schema.Batch], pa.Array]:
    """An anomaly id as int64 (like the CSV reads back); null: none."""

    def column(batch: schema.Batch) -> pa.Array:
        ids = batch.rows[name]
        return pa.array(ids, pa.uint64(), mask=ids == 0).cast(pa.int64())

    return column


_BUILDERS: dict[str, tuple[pa.DataType, Callable[[schema.Batch], pa.Array]]] = {
    "timestamp": (TIMESTAMP, _timestamp),
    **{m: (pa.float64(), _metric(m)) for m in schema.METRICS},
    "device": (DEVICE, _device),
    "seq": (pa.int64(), _seq),
    "anomaly": (LABEL, _label("anomaly", schema.ANOMALY_KINDS)),
    "anomaly_id": (pa.int64(), _id("anomaly_id")),
    "anomaly_root": (pa.int64(), _id("anomaly_root")),
    "event": (LABEL, _label("event", schema.EVENT_KINDS)),
    # `cpu|mem` as in the CSV, from a fixed dictionary of every set of metrics by bit mask
    "anomaly_metrics": (LABEL, _label("anomaly_metrics", schema.METRIC_SETS[1:])),
}


# Read back by pandas, an int64 column with nulls would become float64 (an id such as
# 2923776000001 shown as 2.923776e+12, and ids past 2**53 rounded): pandas metadata in the
# file makes `pd.read_parquet` give these columns pandas' nullable Int64 instead.
NULLABLE_INTEGERS = ("anomaly_id", "anomaly_root")


def _pandas_metadata() -> bytes:
    columns = [
        {"name": n, "field_name": n, "pandas_type": "int64", "numpy_type": "Int64"}
        | {"metadata": None}
        for n in NULLABLE_INTEGERS
    ]
    body = {"index_columns": [], "column_indexes": [], "columns": columns, "attributes": {}}
    return json.dumps({**body, "creator": {"library": "stream-simulator"}}).encode()


def _schema() -> pa.Schema:
    missing = [name for name in schema.COLUMNS if name not in _BUILDERS]
    if missing:
        msg = f"column(s) {', '.join(missing)} of common.schema.COLUMNS have no Arrow type"
        raise LookupError(msg)
    fields = [pa.field(name, _BUILDERS[name][0]) for name in schema.COLUMNS]
    return pa.schema(fields, metadata={b"pandas": _pandas_metadata()})


SCHEMA = _schema()


def record_batch(batch: schema.Batch) -> pa.RecordBatch:
    """The batch's samples as Arrow columns of SCHEMA, in COLUMNS order."""
    columns = [_BUILDERS[name][1](batch) for name in schema.COLUMNS]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)
