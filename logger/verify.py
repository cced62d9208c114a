"""Audit CSV logs: torn rows, duplicates, out-of-order samples and gaps per device.

A gap is "explained" when the gaps file beside a CSV records it (the logger could not
recover it, or the producer never produced it); every other gap is a problem.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.schema import COLUMNS, CSV_HEADER
from logger.files import families, gaps_path


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
    frames = []
    recorded: list[pd.DataFrame] = []
    home: dict[str, Path] = {}  # device -> the log it was found in
    for live, parts in logs.items():
        for path in parts:
            frame = _read(path, report)
            if frame is None:
                continue
            frames.append(frame)
            for device in frame["device"].unique():
                other = home.setdefault(device, live)
                if other != live:
                    report.problems.append(f"device {device} is in both {other} and {live}")
        gaps = gaps_path(live)
        if gaps.exists():
            recorded.append(pd.read_csv(gaps, dtype={"device": str}))
    if not frames:
        return report
    data = pd.concat(frames, ignore_index=True)
    report.rows = len(data)
    report.devices = data["device"].nunique()
    known = pd.concat(recorded, ignore_index=True) if recorded else None
    if known is not None:
        missing = known["last_missing_seq"] - known["first_missing_seq"] + 1
        report.recorded = missing.groupby(known["reason"]).sum().astype(int).to_dict()
    for device, seqs in data.groupby("device", sort=True)["seq"]:
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


def _read(path: Path, report: Report) -> pd.DataFrame | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        report.problems.append(f"{path}: {exc.strerror or exc}")
        return None
    if not raw.startswith((CSV_HEADER + "\n").encode()):
        report.problems.append(f"{path}: header is not {CSV_HEADER!r}")
        return None
    if b"\0" in raw:
        report.problems.append(f"{path}: contains NUL bytes")
    if raw and not raw.endswith(b"\n"):
        report.problems.append(f"{path}: last row is torn (no final newline)")
        raw = raw[: raw.rfind(b"\n") + 1]
    lines = raw.decode("utf-8", "replace").splitlines()[1:]
    fields = list(csv.reader(lines))  # ids holding a comma or a quote are quoted
    bad = [i for i, f in enumerate(fields) if len(f) != len(COLUMNS)]
    if bad:
        report.problems.append(f"{path}: {len(bad)} malformed row(s), first at line {bad[0] + 2}")
        fields = [f for f in fields if len(f) == len(COLUMNS)]
    frame = pd.DataFrame(fields, columns=list(COLUMNS))
    try:
        frame["seq"] = frame["seq"].astype(np.int64)
    except ValueError:
        report.problems.append(f"{path}: a seq is not an integer")
        return None
    return frame
