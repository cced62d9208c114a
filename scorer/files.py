"""Offline input: windows files (ours, or NAB's combined_windows.json), the series they
label (our CSV log or Parquet backfill, or a NAB data file) and alerts files (CSV or JSON
lines of ours, or a NAB results file with its `anomaly_score` column).

Every reader raises InputError with one line naming the file and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from common import schema
from common.errors import InputError
from scorer.matching import MISSING, alerts_frame
from scorer.timeline import TimelineBuilder
from scorer.truth import Truth, events_frame

NAB_KIND = "window"  # the kind of an anomaly from NAB's labels (schema.ANOMALY_KINDS)
CHUNK = 1_000_000


def to_ms(values, where: str) -> np.ndarray:
    """Timestamps (our text, NAB's, ISO 8601) as int64 ms since the epoch, UTC."""
    try:
        stamps = pd.to_datetime(pd.Series(values), format="ISO8601", utc=True)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{where}: bad timestamp: {exc}") from None
    if stamps.isna().any():
        raise InputError(f"{where}: a timestamp is empty")
    return stamps.dt.tz_convert(None).to_numpy("datetime64[ms]").astype(np.int64)


def is_nab_windows(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def default_series(windows: Path) -> Path | None:
    """The log a windows file sits beside (`x.windows.csv` -> `x.csv` or `x.parquet`)."""
    stem = windows.name.removesuffix(".windows.csv")
    if stem == windows.name:
        return None
    for suffix in (".csv", ".parquet", ".pq"):
        candidate = windows.with_name(stem + suffix)
        if candidate.exists():
            return candidate
    return None


def nab_key(windows: dict, series: Path) -> str:
    """Which of NAB's data files a series (or results file) is: by the end of its path, by
    its name (a results file's name has the detector's prefix), or the only one."""
    parts = PurePosixPath(series.as_posix()).parts
    for key in windows:
        key_parts = PurePosixPath(key).parts
        if tuple(parts[-len(key_parts):]) == key_parts:
            return key
    names = {PurePosixPath(k).name: k for k in windows}
    if series.name in names:
        return names[series.name]
    hits = [k for n, k in names.items() if series.name.endswith("_" + n)]
    if len(hits) == 1:
        return hits[0]
    if len(windows) == 1:
        return next(iter(windows))
    raise InputError(f"{series}: no window list in the windows file is for this file")


def read_nab_windows(path: Path) -> dict[str, list[tuple[str, str]]]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read windows file {path}: {exc}") from None
    if not isinstance(body, dict):
        raise InputError(f"{path}: expected {{data file: [[start, end], ...]}}")
    for key, spans in body.items():
        if not isinstance(spans, list) or not all(
            isinstance(s, list) and len(s) == 2 for s in spans
        ):
            raise InputError(f"{path}: {key!r} must hold [start, end] pairs")
    return body


def _read_csv(path: Path, what: str, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from None


def read_series(path: Path, nab_device: str | None = None) -> TimelineBuilder:
    """Every device's samples (seq and time) of a log, a backfill or a NAB data file; a
    NAB file is the device `nab_device`, its rows numbered from 0."""
    builder = TimelineBuilder()
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=["timestamp", "device", "seq"])
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot read series {path}: {exc}") from None
        frame = table.to_pandas()
        ts = frame["timestamp"].to_numpy("datetime64[ms]").astype(np.int64)
        feed(builder, frame["device"].to_numpy(object), frame["seq"].to_numpy(np.int64), ts)
        return builder
    header = _read_csv(path, "series", nrows=0).columns.tolist()
    if "timestamp" not in header:
        raise InputError(f"series {path} has no timestamp column")
    if "device" in header and "seq" in header:
        for chunk in _chunks(path, ["timestamp", "device", "seq"]):
            ts = to_ms(chunk["timestamp"], f"series {path}")
            feed(builder, chunk["device"].astype(str).to_numpy(object),
                  chunk["seq"].to_numpy(np.int64), ts)
        return builder
    frame = _read_csv(path, "series", usecols=["timestamp"])
    ts = to_ms(frame["timestamp"], f"series {path}")
    device = nab_device or path.stem
    feed(builder, np.full(len(ts), device, object), np.arange(len(ts), dtype=np.int64), ts)
    return builder


def _chunks(path: Path, columns: list[str]):
    try:
        yield from pd.read_csv(path, usecols=columns, chunksize=CHUNK, dtype={"device": str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read series {path}: {str(exc).splitlines()[0]}") from None


def feed(builder: TimelineBuilder, devices: np.ndarray, seqs: np.ndarray, ts: np.ndarray) -> None:
    """Samples in per-device seq order, as the live intake gives them."""
    order = np.lexsort((seqs, devices.astype(str)))
    stored = np.array([d.encode("utf-8") for d in devices[order]], schema.DEVICE_DTYPE)
    builder.add(stored, seqs[order], ts[order])


def truth_from_files(windows: Path, series: Path | None) -> tuple[Truth, str | None]:
    """The truth of a windows file and its series; also the NAB data file's key, if NAB."""
    if is_nab_windows(windows):
        spans = read_nab_windows(windows)
        if series is None:
            raise InputError("NAB windows need --series (the data file, or its results file)")
        key = nab_key(spans, series)
        builder = read_series(series, nab_device=key)
        timelines = builder.timelines()
        line = timelines[key]
        rows = []
        for i, (start, end) in enumerate(spans[key], start=1):
            a, b = to_ms([start, end], f"windows file {windows}")
            first, last = line.seq_at(np.array([a, b]), "nearest").tolist()
            rows.append({"id": i, "device": key, "kind": NAB_KIND, "root": i, "start": int(a),
                         "end": int(b), "first_seq": first, "last_seq": last,
                         "samples": last - first + 1, "planned": False})
        return Truth(timelines, events_frame(rows)), key
    if series is None:
        series = default_series(windows)
        if series is None:
            raise InputError(f"give --series: no log beside {windows}")
    frame = _read_csv(windows, "windows file", dtype={"device": str, "metrics": str})
    needed = {"anomaly_id", "device", "kind", "start", "end", "samples"}
    if not needed <= set(frame.columns):
        raise InputError(
            f"windows file {windows} lacks {', '.join(sorted(needed - set(frame.columns)))}"
        )
    timelines = read_series(series).timelines()
    rows = []
    none = np.zeros(0, np.int64)
    start = to_ms(frame["start"], f"windows file {windows}") if len(frame) else none
    end = to_ms(frame["end"], f"windows file {windows}") if len(frame) else none
    roots = frame["root"] if "root" in frame else pd.Series([np.nan] * len(frame))
    for i, row in enumerate(frame.itertuples(index=False)):
        line = timelines.get(row.device)
        if line is None:
            raise InputError(f"windows file {windows}: device {row.device!r} is not in {series}")
        planned = row.kind in schema.EVENT_KINDS
        first, last = line.seq_at(np.array([start[i], end[i]]), "nearest").tolist()
        root = roots.iloc[i]
        rows.append({"id": int(row.anomaly_id), "device": row.device, "kind": row.kind,
                     "root": 0 if planned else int(root) if pd.notna(root) else int(row.anomaly_id),
                     "start": int(start[i]), "end": int(end[i]), "first_seq": first,
                     "last_seq": last, "samples": int(row.samples), "planned": planned})
    return Truth(timelines, events_frame(rows)), None


def kinds(column: pd.Series) -> np.ndarray:
    """Kind guesses as text, None where there is none (an empty field, NaN)."""
    return np.array([k if isinstance(k, str) and k else None for k in column.tolist()], object)


def read_alerts(
    path: Path, nab_device: str | None = None, detector: str | None = None
) -> pd.DataFrame:
    """An alerts file: CSV or JSON lines with device, seq or timestamp, and optionally
    score, kind and detector; or a NAB results file (timestamp, anomaly_score), whose every
    row is an alert with a score (keep those above a threshold)."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        try:
            frame = pd.read_json(path, lines=True, dtype=False)
        except FileNotFoundError:
            raise InputError(f"alerts file {path} does not exist") from None
        except ValueError as exc:
            raise InputError(f"cannot read alerts file {path}: {exc}") from None
    else:
        frame = _read_csv(path, "alerts file", dtype={"device": str, "kind": str, "detector": str})
    name = detector or path.stem
    if "anomaly_score" in frame.columns:  # a NAB results file
        if "timestamp" not in frame.columns:
            raise InputError(f"alerts file {path}: a NAB results file needs a timestamp column")
        device = nab_device or path.stem
        every_row = alerts_frame(np.full(len(frame), device, object),
                                 ts=to_ms(frame["timestamp"], f"alerts file {path}"),
                                 score=frame["anomaly_score"].to_numpy(np.float64), detector=name)
        every_row.attrs["nab_results"] = True  # every row: a threshold picks the alerts
        return every_row
    if "device" not in frame.columns:
        if nab_device is None:
            raise InputError(f"alerts file {path} has no device column")
        frame["device"] = nab_device
    if "seq" not in frame.columns and "timestamp" not in frame.columns:
        raise InputError(f"alerts file {path} needs a seq or a timestamp column")
    seq = frame["seq"] if "seq" in frame.columns else pd.Series([np.nan] * len(frame))
    seq = pd.to_numeric(seq, errors="coerce")
    ts = np.full(len(frame), MISSING, np.int64)
    if "timestamp" in frame.columns:
        given = frame["timestamp"].notna().to_numpy()
        if given.any():
            ts[given] = to_ms(frame["timestamp"][given], f"alerts file {path}")
    if (seq.isna().to_numpy() & (ts == MISSING)).any():
        raise InputError(f"alerts file {path}: an alert names neither a seq nor a timestamp")
    score = pd.to_numeric(frame["score"], errors="coerce") if "score" in frame.columns else None
    kind = kinds(frame["kind"]) if "kind" in frame.columns else None
    if kind is not None:
        bad = sorted({k for k in kind if k is not None} - set(schema.ANOMALY_KINDS))
        if bad:
            raise InputError(f"alerts file {path}: unknown kind {bad[0]!r}")
    who = frame["detector"].fillna(name).astype(str).to_numpy(object) if "detector" in frame \
        else name
    return alerts_frame(
        frame["device"].astype(str).to_numpy(object),
        seq=seq.fillna(-1).to_numpy(np.int64),
        ts=ts,
        score=None if score is None else score.to_numpy(np.float64),
        kind=kind,
        detector=who,
    )
