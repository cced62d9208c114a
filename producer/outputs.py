"""The files a backfill writes its samples to: CSV or Parquet, chosen by name or option.

Each format has an encoder (a batch of samples to what its file takes, run in the
backfill's worker processes, so it is the part that scales with cores) and a file
class that only appends what was encoded. pyarrow is imported for Parquet only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import render, schema

FORMATS: tuple[str, ...] = ("csv", "parquet")
PARQUET_SUFFIXES = (".parquet", ".pq")
# zstd: the smallest file (6.8 bytes a sample against snappy's 8.0 and none's 10.8) at
# about the same speed; see docs/benchmarks.md.
COMPRESSIONS: tuple[str, ...] = ("zstd", "snappy", "none")
COMPRESSION = "zstd"


def format_for(path: Path, fmt: str | None) -> str:
    """The format asked for, else the one the file name says (`.parquet`, `.pq`), else CSV."""
    if fmt is not None:
        if fmt not in FORMATS:
            msg = f"format must be one of {', '.join(FORMATS)}, got {fmt!r}"
            raise ValueError(msg)
        return fmt
    return "parquet" if path.suffix.lower() in PARQUET_SUFFIXES else "csv"


def encoder(fmt: str) -> Callable[[schema.Batch], Any]:
    """What a worker turns a batch into: CSV text, or an Arrow record batch."""
    if fmt == "parquet":
        from common import arrow

        return arrow.record_batch
    return render.csv_rows


class CsvOutput:
    """The header, then rows as rendered; each write is appended whole, in order."""

    FORMAT = "csv"

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self._file.write(schema.CSV_HEADER.encode() + b"\n")

    def write(self, rows: bytes) -> None:
        self._file.write(rows)

    def close(self) -> None:
        self._file.close()


class ParquetOutput:
    """One row group per write, in order; the file is readable once closed (footer last)."""

    FORMAT = "parquet"

    def __init__(self, path: Path, compression: str = COMPRESSION) -> None:
        import pyarrow.parquet as pq

        from common import arrow

        if compression not in COMPRESSIONS:
            msg = f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}"
            raise ValueError(msg)
        self._writer = pq.ParquetWriter(path, arrow.SCHEMA, compression=compression)

    def write(self, rows: Any) -> None:
        self._writer.write_batch(rows)

    def close(self) -> None:
        self._writer.close()


class ArrowTable:
    """The rows kept in memory as Arrow record batches, in order (the Python API's backfill):
    encoded like a Parquet file's, so they hold exactly what it would."""

    FORMAT = "parquet"

    def __init__(self) -> None:
        self.batches: list[Any] = []

    def write(self, rows: Any) -> None:
        self.batches.append(rows)

    def table(self) -> Any:
        """Everything written, as one `pyarrow.Table` of `common.arrow.SCHEMA`."""
        import pyarrow as pa

        from common import arrow

        return pa.Table.from_batches(self.batches, schema=arrow.SCHEMA)

    def close(self) -> None:
        pass


Output = CsvOutput | ParquetOutput | ArrowTable


def open_output(path: Path, fmt: str, compression: str = COMPRESSION) -> CsvOutput | ParquetOutput:
    """A new (replaced) file of `fmt` at `path`."""
    return ParquetOutput(path, compression) if fmt == "parquet" else CsvOutput(path)
