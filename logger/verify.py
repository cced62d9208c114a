"""Audit CSV logs: torn rows, duplicates, out-of-order samples and gaps per device.

A gap is "explained" when the gaps file beside a CSV records it (the logger could not
recover it, or the producer never produced it); every other gap is a problem.

Files of different series (common.logseries: another seed, fleet, scenario or source; an
earlier run's log beside a later one's) are checked each series on its own, so a glob
such as `data/stream_log*.csv` never mixes runs; with no file named, `logger verify`
takes every file of the log STREAM_CSV names (its rotated parts and its loggers' shards).
"""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from common import logseries
from common.schema import CSV_HEADER, LEGACY_CSV_HEADER
from logger.files import base_name, families, gaps_path


@dataclass
class Report:
    files: int = 0
    rows: int = 0
    devices: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    unexplained_gaps: list[str] = field(default_factory=list)
    recorded: dict[str, int] = field(default_factory=dict)  # reason -> missing samples
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.problems or self.duplicates or self.out_of_order or self.unexplained_gaps)

    def lines(self) -> list[str]:
        recorded = ", ".join(f"{n} {reason}" for reason, n in sorted(self.recorded.items()))
        out = [
            f"checked {self.files} file(s): {self.rows} rows, {self.devices} device(s)",
            f"duplicates: {self.duplicates}",
            f"out of order: {self.out_of_order}",
            f"unexplained gaps: {len(self.unexplained_gaps)}",
            f"recorded gaps (missing samples): {recorded or 'none'}",
        ]
        out += [f"  gap: {g}" for g in self.unexplained_gaps[:20]]
        out += [f"  problem: {p}" for p in self.problems[:20]]
        out.append("OK" if self.ok else "PROBLEMS FOUND")
        return out


def verify(paths: list[Path]) -> Report:
    """Check the files as one log: each logger's parts in order, and their union.

    Files may come in any order and from several loggers (`stream_log.1-of-2.csv`, ...):
    parts are put in order per log, and a device found in two logs is a problem, since a
    device belongs to one logger."""
    logs = families(paths)
    report = Report(files=sum(len(parts) for parts in logs.values()))
    tables: list[pa.Table] = []
    recorded: list[pd.DataFrame] = []
    spans: dict[str, dict[Path, tuple[int, int]]] = {}  # device -> log -> (first, last seq)
    for live, parts in logs.items():
        for path in parts:
            table = _read(path, report)
            if table is None:
                continue
            tables.append(table)
            _note_spans(spans, live, table)
        gaps = gaps_path(live)
        if gaps.exists():
            recorded.append(pd.read_csv(gaps, dtype={"device": str}))
    report.problems += _shared_devices(spans)
    if not tables:
        return report
    # Devices as a category: one string per device, not one per row.
    joined = pa.concat_tables(tables)
    data = pd.DataFrame(
        {
            "device": joined["device"].dictionary_encode().to_pandas(),
            "seq": joined["seq"].to_numpy(),
        }
    )
    report.rows = len(data)
    report.devices = data["device"].nunique()
    known = pd.concat(recorded, ignore_index=True) if recorded else None
    if known is not None:
        missing = known["last_missing_seq"] - known["first_missing_seq"] + 1
        report.recorded = missing.groupby(known["reason"]).sum().astype(int).to_dict()
    for device, seqs in data.groupby("device", sort=True, observed=True)["seq"]:
        s = seqs.to_numpy(np.int64)
        report.duplicates += len(s) - len(np.unique(s))
        running = np.maximum.accumulate(s)
        report.out_of_order += int((s[1:] < running[:-1]).sum())
        ordered = np.unique(s)
        for i in np.flatnonzero(np.diff(ordered) > 1):
            first, last = int(ordered[i]) + 1, int(ordered[i + 1]) - 1
            if not _explained(known, device, first, last):
                report.unexplained_gaps.append(f"{device} seq {first}..{last}")
    return report


def _note_spans(spans: dict[str, dict[Path, tuple[int, int]]], live: Path, table: pa.Table) -> None:
    """Widen each device's (first, last) seq in the log `live` by what `table` holds."""
    ranges = table.group_by("device").aggregate([("seq", "min"), ("seq", "max")])
    columns = [ranges[name].to_pylist() for name in ("device", "seq_min", "seq_max")]
    for device, low, high in zip(*columns, strict=True):
        known = spans.setdefault(device, {}).get(live)
        if known is not None:
            low, high = min(low, known[0]), max(high, known[1])
        spans[device][live] = (low, high)


def _shared_devices(spans: dict[str, dict[Path, tuple[int, int]]]) -> list[str]:
    """A device belongs to one logger at a time: in two logs, its seqs must not interleave
    (an earlier formation's log beside a later one's is fine; two loggers at once is not)."""
    problems = []
    for device, found in spans.items():
        ordered = sorted(found.items(), key=lambda item: item[1])
        for (one, (_, last)), (other, (first, _)) in zip(ordered, ordered[1:], strict=False):
            if first <= last:
                problems.append(f"device {device} is in both {one} and {other}")
    return problems


def verify_by_series(paths: list[Path]) -> list[tuple[dict | None, list[Path], Report]]:
    """The files grouped by the series they hold (their records, common.logseries), each
    group checked on its own: (series, files, report) in the order the groups were met."""
    groups: dict[str, tuple[dict | None, list[Path]]] = {}
    for parts in families(paths).values():
        for path, series in zip(parts, _series_of(parts), strict=True):
            key = json.dumps(series, sort_keys=True)
            groups.setdefault(key, (series, []))[1].append(path)
    return [(series, files, verify(files)) for series, files in groups.values()]


def _series_of(parts: list[Path]) -> list[dict | None]:
    """The series of each part of one log, oldest first. A part without a record (a crash
    between renaming a part and its record, or a file from before records were kept) is
    of the series of the nearest part before it that has one, else after it."""
    found = [logseries.read(path).get("series") for path in parts]
    known = [i for i, series in enumerate(found) if series is not None]
    if not known:
        return found
    return [
        series
        if series is not None
        else found[max((k for k in known if k < i), default=min(known))]
        for i, series in enumerate(found)
    ]


def log_files(csv: Path) -> list[Path]:
    """Every file of the log `csv` names: itself, its rotated parts, and the files of its
    loggers' shards (`stream_log.2-of-3.csv`) with theirs."""
    found = [
        path
        for path in csv.parent.glob(f"{glob.escape(csv.stem)}*{glob.escape(csv.suffix)}")
        if not path.stem.endswith((".windows", ".gaps"))
    ]
    return [
        path
        for live, parts in families(found).items()
        if base_name(live) == csv.stem
        for path in parts
    ]


def _explained(known: pd.DataFrame | None, device: str, first: int, last: int) -> bool:
    if known is None:
        return False
    mine = known[known["device"] == device]
    covered = np.zeros(last - first + 1, bool)
    for a, b in zip(mine["first_missing_seq"], mine["last_missing_seq"], strict=True):
        lo, hi = max(a, first), min(b, last)
        if lo <= hi:
            covered[lo - first : hi - first + 1] = True
    return bool(covered.all())


def _read(path: Path, report: Report) -> pa.Table | None:
    """The file's device and seq columns, after its header, tail and bytes are checked.

    Arrow's CSV reader parses the file in C++ and keeps only those two columns, so a log of
    tens of millions of rows takes a few hundred MB, not the tens of GB Python strings
    would; quoted ids (a comma or a quote inside) are parsed as CSV quotes them."""
    try:
        with path.open("rb") as file:
            head = file.read(len(CSV_HEADER) + 1)
            file.seek(0)
            tail, nul = _scan(file)
    except OSError as exc:
        report.problems.append(f"{path}: {exc.strerror or exc}")
        return None
    # A log of an earlier release (no anomaly_metrics column) is checked the same way: only
    # device and seq are read, and they are where they always were.
    if head.split(b"\n", 1)[0] + b"\n" not in _HEADERS:
        report.problems.append(f"{path}: header is not {CSV_HEADER!r}")
        return None
    if nul:
        report.problems.append(f"{path}: contains NUL bytes")
    source: Path | pa.BufferReader = path
    if tail != b"\n" and tail:
        report.problems.append(f"{path}: last row is torn (no final newline)")
        raw = path.read_bytes()  # rare: read all but the torn row into memory
        source = pa.BufferReader(raw[: raw.rfind(b"\n") + 1])
    malformed: list[int | None] = []

    def skip(row: pa_csv.InvalidRow) -> str:
        malformed.append(row.number)
        return "skip"

    try:
        table = pa_csv.read_csv(
            source,
            read_options=pa_csv.ReadOptions(use_threads=False),  # so bad rows have a number
            parse_options=pa_csv.ParseOptions(invalid_row_handler=skip),
            convert_options=pa_csv.ConvertOptions(
                column_types={"device": pa.string(), "seq": pa.int64()},
                include_columns=["device", "seq"],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        report.problems.append(f"{path}: {_arrow_problem(exc)}")
        return None
    if malformed:
        first = min((n for n in malformed if n is not None), default=None)
        where = f", first at line {first}" if first is not None else ""
        report.problems.append(f"{path}: {len(malformed)} malformed row(s){where}")
    return table


_HEADERS = ((CSV_HEADER + "\n").encode(), (LEGACY_CSV_HEADER + "\n").encode())


def _scan(file: BinaryIO) -> tuple[bytes, bool]:
    """The file's last byte and whether a NUL byte is anywhere in it, read in blocks."""
    last, nul = b"", False
    while block := file.read(1 << 24):
        nul = nul or b"\0" in block
        last = block[-1:]
    return last, nul


def _arrow_problem(exc: pa.ArrowInvalid) -> str:
    """Arrow's words for a value it could not read, shortened to what a user can act on."""
    text = str(exc)
    if "UTF8" in text or "UTF-8" in text:
        return "a row is not UTF-8 text"
    row = re.search(r"Row #(\d+): Expected (\d+) columns, got (\d+)", text)
    if row:  # a malformed row the handler could not be shown (its bytes are not UTF-8)
        return f"malformed row at line {row[1]}: {row[3]} fields, not {row[2]}"
    value = re.search(r"invalid value '(.*)'", text)
    if value:  # the only converted column is seq
        return f"a seq is not an integer: {value[1]!r}"
    return text.splitlines()[0]
