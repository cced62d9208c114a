"""The API's DataFrames and their dtypes, made in one place whatever the source (a backfill in
memory, a CSV log, a Parquet file, samples from the live stream), so that equal data gives
equal frames.

Samples: `timestamp` datetime64[ms, UTC]; `cpu`, `mem`, `disk_io`, `net` float64 (NaN: no
value); `device` category (in order of first appearance); `seq` int64; `anomaly` and
`event` category (every kind a category, in wire order); `anomaly_id`, `anomaly_root`
Int64 (<NA>: none); `anomaly_metrics` category (the 15 sets of metrics an anomaly may alter,
`cpu|mem`; NaN for a normal sample, or a log written before the column existed). Windows and
gaps files get the same types for the same kinds of column.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from streamsim._isolated import project

schema = project("common.schema")
arrow = project("common.arrow")

TIMESTAMP = "datetime64[ms, UTC]"
ANOMALY = pd.CategoricalDtype(list(schema.ANOMALY_KINDS))
EVENT = pd.CategoricalDtype(list(schema.EVENT_KINDS))
WINDOW_KIND = pd.CategoricalDtype([*schema.ANOMALY_KINDS, *schema.EVENT_KINDS])
METRIC_SETS = pd.CategoricalDtype(list(schema.METRIC_SETS[1:]))
_KINDS = {
    "anomaly": schema.ANOMALY_KINDS,
    "event": schema.EVENT_KINDS,
    "anomaly_metrics": schema.METRIC_SETS[1:],
}
_IDS = ("anomaly_id", "anomaly_root", "root")
_FIXED = {"anomaly": ANOMALY, "event": EVENT, "anomaly_metrics": METRIC_SETS, "kind": WINDOW_KIND}
_INT64 = {pa.int64(): pd.Int64Dtype()}.get
WINDOWS_COLUMNS = ("anomaly_id", "device", "kind", "metrics", "start", "end", "samples", "root")
GAPS_COLUMNS = ("device", "first_missing_seq", "last_missing_seq", "after", "before", "reason")


def frame(table: pa.Table) -> pd.DataFrame:
    """Arrow columns (samples of `common.arrow.SCHEMA`, or a windows or gaps file read by
    `read_csv`) as a DataFrame of the API's dtypes, columns in the table's order."""
    table = table.unify_dictionaries()
    # One column a block, nothing consolidated: a copy of every column saved.
    result = table.to_pandas(split_blocks=True)
    for name in table.column_names:
        column = table[name]
        if name in _IDS:
            result[name] = column.to_pandas(types_mapper=_INT64)
        elif name in _FIXED:
            result[name] = result[name].astype(_FIXED[name])
        elif pa.types.is_dictionary(column.type) or name == "reason":
            values = result[name].astype("category")
            if not len(values.cat.categories):  # empty: text categories all the same
                values = values.cat.set_categories(pd.Index([], dtype="str"))
            result[name] = values
    return result


def samples_table(table: pa.Table, where: str) -> pa.Table:
    """A CSV's samples (every column read as text or number by `read_csv`) as Arrow columns of
    `common.arrow.SCHEMA`; ValueError naming `where` and the value if one is not ours."""
    columns = []
    for field in arrow.SCHEMA:
        if field.name not in table.column_names and field.name == "anomaly_metrics":
            column = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])  # an older log
        else:
            column = table[field.name]
        if field.name == "timestamp":
            column = timestamps(column, where)
        elif field.name == "device":
            column = pc.dictionary_encode(column)
        elif field.name in _KINDS:
            column = _labels(column, _KINDS[field.name], field.name, where)
        columns.append(column.cast(field.type))
    return pa.table(columns, schema=arrow.SCHEMA)


def timestamps(column: pa.ChunkedArray, where: str) -> pa.ChunkedArray:
    """Text timestamps as UTC milliseconds: ours (`YYYY-MM-DD HH:MM:SS[.fff]`, UTC without
    saying so), or ISO 8601 ones that name their zone."""
    try:
        return column.cast(pa.timestamp("ms")).cast(pa.timestamp("ms", tz="UTC"))
    except pa.ArrowInvalid:
        pass
    try:
        return column.cast(pa.timestamp("ms", tz="UTC"))
    except pa.ArrowInvalid:
        pass
    text = column.to_pandas()
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")  # a mix of both
    bad = parsed.isna() & text.notna()
    if bad.any():
        raise ValueError(f"{where}: timestamp {text[bad].iloc[0]!r} is not a date and time")
    return pa.chunked_array([pa.array(parsed.astype(TIMESTAMP))])


def _labels(
    column: pa.ChunkedArray, kinds: tuple[str, ...], name: str, where: str
) -> pa.ChunkedArray:
    """Label text as the fixed dictionary of every kind (null: no label)."""
    dictionary = pa.array(kinds, pa.string())
    indices = pc.index_in(column, value_set=dictionary)
    unknown = pc.and_(pc.is_null(indices), pc.is_valid(column))
    if pc.any(unknown).as_py():
        value = pc.filter(column, unknown)[0].as_py()
        raise ValueError(f"{where}: unknown {name} kind {value!r}; allowed: {', '.join(kinds)}")
    return pa.chunked_array(
        [pa.DictionaryArray.from_arrays(c.cast(pa.int8()), dictionary) for c in indices.chunks],
        type=pa.dictionary(pa.int8(), pa.string()),
    )


def read_csv(source: Any, types: Mapping[str, pa.DataType], where: str) -> pa.Table:
    """A CSV of ours with these column types: an empty field is null (a device id is text
    whatever it says: `NA`, `null`); ValueError naming `where` on a row that is not valid."""
    options = pa_csv.ConvertOptions(
        column_types=dict(types),
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    try:
        return pa_csv.read_csv(source, convert_options=options)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"{where}: {_problem(exc)}") from None


def _problem(exc: pa.ArrowInvalid) -> str:
    first = str(exc).splitlines()[0]
    return first.removeprefix("CSV parse error: ").removeprefix("In CSV column ")


SAMPLE_TYPES: dict[str, pa.DataType] = {
    "timestamp": pa.string(),
    **{m: pa.float64() for m in schema.METRICS},
    "device": pa.string(),
    "seq": pa.int64(),
    "anomaly": pa.string(),
    "anomaly_id": pa.int64(),
    "anomaly_root": pa.int64(),
    "event": pa.string(),
    "anomaly_metrics": pa.string(),
}
WINDOW_TYPES: dict[str, pa.DataType] = {
    "anomaly_id": pa.int64(),
    "device": pa.string(),
    "kind": pa.string(),
    "metrics": pa.string(),
    "start": pa.string(),
    "end": pa.string(),
    "samples": pa.int64(),
    "root": pa.int64(),
}
GAP_TYPES: dict[str, pa.DataType] = {
    "device": pa.string(),
    "first_missing_seq": pa.int64(),
    "last_missing_seq": pa.int64(),
    "after": pa.string(),
    "before": pa.string(),
    "reason": pa.string(),
}


def windows(tables: list[pa.Table], where: str) -> pd.DataFrame:
    """Windows files' rows (from `read_csv` with WINDOW_TYPES), in file order, typed."""
    return _side(tables, WINDOW_TYPES, ("start", "end"), where)


def gaps(tables: list[pa.Table], where: str) -> pd.DataFrame:
    """Gaps files' rows (from `read_csv` with GAP_TYPES), in file order, typed."""
    return _side(tables, GAP_TYPES, ("after", "before"), where)


def _side(
    tables: list[pa.Table], types: dict[str, pa.DataType], stamps: tuple[str, ...], where: str
) -> pd.DataFrame:
    names = list(types)
    parts = []
    for table in tables:
        if "root" in types and "root" not in table.column_names:  # written before roots
            table = table.append_column("root", pa.nulls(table.num_rows, pa.int64()))
        parts.append(table.select(names))
    if not parts:
        parts = [pa.table({n: pa.array([], t) for n, t in types.items()})]
    table = pa.concat_tables(parts)
    for name in stamps:
        table = table.set_column(
            table.column_names.index(name), name, timestamps(table[name], where)
        )
    at = names.index("device")
    return frame(table.set_column(at, "device", pc.dictionary_encode(table["device"])))


def from_samples(samples: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Samples as the stream gives them (dicts) as a DataFrame of the API's dtypes: the
    columns present in them, in the CSV's order."""
    rows = list(samples)
    present = [c for c in schema.COLUMNS if c in rows[0]] if rows else list(schema.COLUMNS)
    columns = {}
    for name in present:
        values = [r.get(name) for r in rows]
        if name == "timestamp":
            columns[name] = pa.array([_moment(v) for v in values], pa.timestamp("ms", tz="UTC"))
        elif name == "device":
            columns[name] = pa.array(values, pa.string()).dictionary_encode()
        elif name in _KINDS:
            text = pa.chunked_array([pa.array(values, pa.string())])
            columns[name] = _labels(text, _KINDS[name], name, "stream").combine_chunks()
        else:
            columns[name] = pa.array(values, dict(SAMPLE_TYPES)[name])
    return frame(pa.table(columns) if columns else pa.table({}))


def _moment(value: Any) -> Any:
    """A sample's time: a datetime, or the JSON's text (UTC)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value
