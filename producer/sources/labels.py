"""A benchmark's ground truth for a replay file: the anomaly windows of NAB's
`combined_windows.json` (`{"realKnownCause/x.csv": [["start", "end"], ...], ...}`).

The windows of the replay file are those under the key whose file name is the replay
file's (or under the only key); samples inside one are labelled anomaly kind `window`.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from common.errors import InputError, StartupError


def load_windows(path: Path, data_file: Path) -> np.ndarray:
    """The windows of `data_file` in the labels file `path`, as (k, 2) epoch ms (UTC),
    inclusive; InputError with one line if the file or its entry is not usable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise StartupError(f"cannot read labels file {path}: {exc}") from None
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise InputError(f"labels file {path} is not JSON: {exc}") from None
    if not isinstance(table, dict) or not table:
        raise InputError(
            f'labels file {path} must be an object like {{"data/x.csv": [["start", "end"]]}}'
        )
    key = _key(path, table, data_file)
    windows = table[key]
    if not isinstance(windows, list):
        raise InputError(f"labels file {path}: {key!r} must hold a list of [start, end]")
    spans = []
    for number, window in enumerate(windows, 1):
        where = f"labels file {path}: window {number} of {key!r}"
        if not (isinstance(window, list) and len(window) == 2):
            raise InputError(f"{where} is {window!r}, not [start, end]")
        try:
            start, end = (_ms(str(moment)) for moment in window)
        except ValueError:
            raise InputError(f"{where} holds a time that is not a date: {window!r}") from None
        if start > end:
            raise InputError(f"{where} ends before it starts: {window!r}")
        spans.append((start, end))
    return np.array(spans, np.int64).reshape(-1, 2)


def _key(path: Path, table: dict, data_file: Path) -> str:
    """The key naming `data_file`: same file name (and, if several, the one its path ends
    with), or the only key."""
    named = [k for k in table if PurePosixPath(str(k)).name == data_file.name]
    if len(named) > 1:
        whole = data_file.resolve().as_posix()
        named = [k for k in named if whole.endswith("/" + str(k).lstrip("/"))]
    if len(named) == 1:
        return named[0]
    if not named and len(table) == 1:
        return next(iter(table))
    keys = ", ".join(sorted(map(str, table))[:5]) + (", ..." if len(table) > 5 else "")
    if named:
        raise InputError(f"labels file {path} has several entries for {data_file.name}: {keys}")
    raise InputError(f"labels file {path} has no windows for {data_file.name} (it has: {keys})")


def _ms(moment: str) -> int:
    """`2014-02-19 10:50:00.000000` (UTC unless it says otherwise) as epoch ms."""
    stamp = pd.Timestamp(moment)  # raises ValueError if unreadable
    if stamp is pd.NaT:
        raise ValueError(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return (stamp - pd.Timestamp(0)) // pd.Timedelta(milliseconds=1)
