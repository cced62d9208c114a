"""`read_log`: a logger's CSV (all its rotated parts, several loggers' shares) or a backfill's
file, with its windows and gaps files, as typed DataFrames."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from streamsim import frames
from streamsim._isolated import project

PathLike = str | os.PathLike[str]
_TAIL = 1 << 16


@dataclass(frozen=True)
class Log:
    """A log's samples, its anomaly windows and its gap records. Unpacks as
    `samples, windows, gaps = read_log(...)`."""

    samples: pd.DataFrame
    windows: pd.DataFrame
    gaps: pd.DataFrame
    files: tuple[Path, ...]  # the data files read, in the order their rows are

    def __iter__(self) -> Iterator[pd.DataFrame]:
        return iter((self.samples, self.windows, self.gaps))


def read_log(path_or_parts: PathLike | Iterable[PathLike]) -> Log:
    """The samples of a log, with its windows and gaps, in the dtypes `generate` gives.

    `path_or_parts`: the logger's CSV (`data/stream_log.csv`: its rotated parts
    `stream_log-000001.csv`, ... are read too, oldest first), a glob pattern
    (`data/stream_log*.csv`: every part of every logger's share), a list of files, or a
    backfill's CSV or Parquet file. Rows come in file order, each log's parts oldest first;
    the windows and gaps are those of each log (`<log>.windows.csv`, `<log>.gaps.csv`, when
    they exist), in file order. A row being written at the end of a live log (no newline
    yet) is left out.

    Raises FileNotFoundError if a file (or anything matching the pattern) is missing, and
    ValueError naming the file if it is not one of ours (its header) or holds a value that
    is not (a row with the wrong number of fields, an unknown label).
    """
    files_module = project("logger.files")
    windows_module = project("common.windows")
    logs = files_module.families(_paths(path_or_parts))
    tables: list[pa.Table] = []
    windows: list[pa.Table] = []
    gaps: list[pa.Table] = []
    read: list[Path] = []
    for live, parts in logs.items():
        for path in parts:
            tables.append(_samples(path))
            read.append(path)
        side = windows_module.windows_path(live)
        if side.is_file():
            windows.append(frames.read_csv(side, frames.WINDOW_TYPES, str(side)))
        side = files_module.gaps_path(live)
        if side.is_file():
            gaps.append(frames.read_csv(side, frames.GAP_TYPES, str(side)))
    table = pa.concat_tables(tables) if tables else frames.arrow.SCHEMA.empty_table()
    return Log(
        samples=frames.frame(table),
        windows=frames.windows(windows, "windows"),
        gaps=frames.gaps(gaps, "gaps"),
        files=tuple(read),
    )


def _paths(given: PathLike | Iterable[PathLike]) -> list[Path]:
    """The files named: a log with its rotated parts, a pattern's matches, or a list."""
    if isinstance(given, str | os.PathLike):
        text = os.fspath(given)
        if glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text))
            if not found:
                raise FileNotFoundError(f"no file matches {text}")
            return found
        path = Path(text)
        _check(path)
        return [*project("logger.files").rotated_files(path), path]
    paths = [Path(os.fspath(p)) for p in given]
    for path in paths:
        _check(path)
    return paths


def _check(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"cannot read {path}: no such file")


def _samples(path: Path) -> pa.Table:
    """One file's samples as Arrow columns of `common.arrow.SCHEMA`."""
    if path.suffix.lower() in project("producer.outputs").PARQUET_SUFFIXES:
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{path}: not a Parquet file of ours: {exc}") from None
        if tuple(table.column_names) != frames.schema.COLUMNS:
            raise ValueError(
                f"{path} has columns {', '.join(table.column_names)}, expected "
                f"{', '.join(frames.schema.COLUMNS)}"
            )
        return table.cast(frames.arrow.SCHEMA)
    header = frames.schema.CSV_HEADER
    with path.open("rb") as file:
        first = file.read(len(header) + 1)
        if first != (header + "\n").encode():
            shown = first.split(b"\n", 1)[0].decode("utf-8", "replace")
            raise ValueError(f"{path} has header {shown!r}, expected {header!r}")
        end = _whole_rows(file)
    with pa.memory_map(str(path)) as mapped:
        source = pa.BufferReader(mapped.read_at(end, 0))
        raw = frames.read_csv(source, frames.SAMPLE_TYPES, str(path))
    return frames.samples_table(raw, str(path))


def _whole_rows(file: BinaryIO) -> int:
    """Where the file's last whole row ends: a row being written (or a torn one, NUL
    padding) after the last newline is not read."""
    size = file.seek(0, os.SEEK_END)
    position = size
    while position > 0:
        start = max(0, position - _TAIL)
        file.seek(start)
        block = file.read(position - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0
