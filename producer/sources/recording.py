"""A replay file read and checked: its rows on the file's own time axis, each either a valid
sample or refused, with its line and the text that is wrong.

The file is read as text, so that the precision of its values is known (a NAB series of
0.132 stays 0.132) and a bad row is named by its line (the header is line 1) and its very
text. A row is refused when its timestamp is unreadable or not after the previous row of
its device, a value is not a number, infinite or outside its metric's domain, its device
id is not valid, or a label is unknown. Empty and blank-only files, and files without a
usable column, are refused as a whole.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from common import schema
from common.errors import InputError, StartupError

log = logging.getLogger(__name__)

_NO_VALUE = ("", "nan")  # (lowercase) a metric the row does not report
_LABEL_COLUMNS = ("anomaly", "anomaly_id", "anomaly_root", "event")
_MARK = "\0"  # fills a line that has too many fields (text from a file never holds a NUL)
_NO_TIME = np.iinfo(np.int64).min
_ID = re.compile(r"[0-9]+(\.0*)?")  # 12 or 12.0 (a log re-saved by pandas)
_SHOWN = 3  # refused rows named in the start-up log


@dataclass(frozen=True)
class Recording:
    """Rows in replay order (the file's timestamps, ties in file order)."""

    path: Path
    ts_ms: np.ndarray  # the file's own time of each row (a refused row: where it is reached)
    first_ms: int  # the time of the file's first row: the replay's time 0
    span_ms: int  # how far the time axis moves on each time the replay goes round
    line: np.ndarray  # the row's line in the file
    devices: np.ndarray  # DEVICE_DTYPE, the distinct valid device ids
    device_index: np.ndarray  # per row, into devices; -1: the row's device id is not valid
    seq_offset: np.ndarray  # per row, its place among its device's rows in file order
    device_rows: np.ndarray  # per device, its rows in the file (seq moves on by this per round)
    values: np.ndarray  # (n, 4), rounded to `decimals`
    anomaly: np.ndarray
    anomaly_metrics: np.ndarray
    anomaly_id: np.ndarray
    anomaly_root: np.ndarray
    event: np.ndarray
    refused: np.ndarray  # bool: not a valid sample, never published
    problems: list[str]  # `line N: problem` of the first refused rows
    decimals: int  # of the values: the most the file's text shows
    precision: int  # of the timestamps: seconds unless a device's rows are closer than 1 s
    smallest_step_ms: float  # the least time between two rows of one device

    @property
    def offset_ms(self) -> np.ndarray:
        return self.ts_ms - self.first_ms

    def only(self, keep: Callable[[bytes], bool], unattributed: bool) -> Recording | None:
        """The rows of the devices `keep` accepts, and the rows without a valid device id
        if `unattributed` (None if no row is left); the time axis stays the file's."""
        kept = np.array([keep(bytes(d)) for d in self.devices], bool)
        renumber = np.cumsum(kept) - 1
        valid = self.device_index >= 0
        rows = np.where(valid, kept[np.maximum(self.device_index, 0)], unattributed)
        if not rows.any():
            return None
        index = self.device_index[rows]
        return replace(
            self,
            ts_ms=self.ts_ms[rows],
            line=self.line[rows],
            devices=self.devices[kept],
            device_index=np.where(index >= 0, renumber[np.maximum(index, 0)], -1),
            seq_offset=self.seq_offset[rows],
            device_rows=self.device_rows[kept],
            values=self.values[rows],
            anomaly=self.anomaly[rows],
            anomaly_metrics=self.anomaly_metrics[rows],
            anomaly_id=self.anomaly_id[rows],
            anomaly_root=self.anomaly_root[rows],
            event=self.event[rows],
            refused=self.refused[rows],
        )

    def max_rate(self, speed: float) -> float:
        """Most samples one device gets per wall second (bounds how many seqs a run uses)."""
        return min(1000.0, 1000.0 / max(self.smallest_step_ms, 1.0) * speed)


def load(
    path: Path,
    metric: str = "cpu",
    on_bad_row: str = "error",
    windows: np.ndarray | None = None,
) -> Recording:
    """Read and check `path`; a `timestamp,value` file's value becomes `metric`.

    A bad row raises InputError naming the file, its line and its text, unless `on_bad_row`
    is "skip": then it is kept, refused, and named in one warning. `windows` ((k, 2) ms,
    inclusive, on the file's time axis) label the samples inside them anomaly `window`.
    """
    frame, lines, wide = _read(path, on_bad_row)
    n = len(frame)
    checks: list[tuple[np.ndarray, Callable[[int], str]]] = []

    def check(bad: np.ndarray, describe: Callable[[int], str]) -> None:
        if bad.any():
            checks.append((bad, describe))

    expected = len(frame.columns)
    check(
        wide > 0,
        lambda i: f"{wide[i]} fields, expected {expected} (quote a field that holds a comma)",
    )
    names = frame["device"] if "device" in frame else pd.Series(["host-01"] * n)
    codes, distinct = pd.factorize(names)
    problems = [_device_problem(str(d)) for d in distinct]
    bad_id = np.array([p is not None for p in problems], bool)
    device_ok = ~bad_id[codes] & (wide == 0)
    check(~device_ok & (wide == 0), lambda i: str(problems[codes[i]]))

    stamps = frame["timestamp"].str.strip()
    ts = _timestamps(stamps)
    readable = ts != _NO_TIME
    check(device_ok & ~readable, lambda i: (
        f"timestamp {stamps[i]!r} is not a date and time like 2014-02-19 10:50:00"
    ))  # fmt: skip

    values, decimals = _values(frame, metric, check, device_ok)
    labels = _labels(frame, check, device_ok)

    # Per device, in file order: the latest time of its earlier rows.
    device = np.where(device_ok, codes, -1)
    latest = pd.Series(np.where(readable, ts, _NO_TIME)).groupby(device).cummax()
    before = latest.groupby(device).shift(1, fill_value=_NO_TIME).to_numpy(np.int64)
    behind = device_ok & readable & (before != _NO_TIME) & (ts <= before)
    check(behind, lambda i: _behind(i, stamps, ts, device, names))

    refused = np.zeros(n, bool)
    for bad, _ in checks:
        refused |= bad
    shown = [f"line {lines[i]}: {_problem(checks, i)}" for i in np.flatnonzero(refused)[:_SHOWN]]
    if refused.any() and on_bad_row == "error":
        raise InputError(f"replay file {path} {shown[0]}")
    if refused.all():
        raise InputError(f"replay file {path}: none of its {n} rows is a valid sample ({shown[0]})")
    if refused.any():
        more = f"; and {refused.sum() - _SHOWN} more" if refused.sum() > _SHOWN else ""
        log.warning(
            "replay file %s: skipping %d row(s) that are not valid samples "
            "(recorded as gaps, reason invalid_input): %s%s",
            path,
            refused.sum(),
            "; ".join(shown),
            more,
        )
    # The replay's time 0 is its first valid sample. A refused row is reached at its own
    # time if it has one in order, else right after the latest earlier row of its device
    # (or at the start).
    start = int(ts[~refused].min())
    placed = np.where(readable & ~behind, ts, np.where(before != _NO_TIME, before, start))
    if windows is not None:
        _label_windows(labels, placed, windows, refused, frame, metric)

    order = np.argsort(placed, kind="stable")
    seq_offset = pd.Series(np.zeros(n)).groupby(device).cumcount().to_numpy(np.int64)
    device_rows = np.bincount(device[device >= 0], minlength=len(distinct))
    keep_devices = ~bad_id
    renumber = np.cumsum(keep_devices) - 1
    steps = _steps(placed[~refused], device[~refused])
    smallest = float(steps.min()) if len(steps) else 1000.0
    distinct_steps = np.diff(np.unique(placed[~refused]))
    typical = float(np.median(distinct_steps)) if len(distinct_steps) else 1000.0
    return Recording(
        path=path,
        ts_ms=placed[order],
        first_ms=start,
        # A loop goes on one typical step after the last row (a second at least while
        # timestamps show seconds, so that they stay unique).
        span_ms=int(placed.max())
        - start
        + round(max(typical, 1000.0 if smallest >= 1000 else 1.0)),
        line=lines[order],
        devices=schema.device_array([str(d) for d in distinct[keep_devices]]),
        device_index=np.where(device >= 0, renumber[np.maximum(device, 0)], -1)[order],
        seq_offset=seq_offset[order],
        device_rows=device_rows[keep_devices],
        values=values[order],
        anomaly=labels["anomaly"][order],
        anomaly_metrics=labels["anomaly_metrics"][order],
        anomaly_id=labels["anomaly_id"][order],
        anomaly_root=labels["anomaly_root"][order],
        event=labels["event"][order],
        refused=refused[order],
        problems=shown,
        decimals=decimals,
        precision=schema.SECONDS if smallest >= 1000 else schema.MILLISECONDS,
        smallest_step_ms=smallest,
    )


def _read(path: Path, on_bad_row: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The rows as text (blank lines dropped), the line of each, and for a line with too
    many fields how many it had (0 for the others)."""
    options = dict(
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=False,  # so that a row's place tells its line
        encoding="utf-8-sig",
        encoding_errors="surrogateescape",
    )
    wide_lines: list[int] = []
    try:
        frame = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise InputError(f"replay file {path} is empty") from None
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if found is None:
            raise InputError(f"replay file {path} is not a CSV file: {exc}") from None
        if on_bad_row == "error":
            expected, line, saw = found.groups()
            raise InputError(
                f"replay file {path} line {line}: {saw} fields, expected {expected} "
                "(quote a field that holds a comma)"
            ) from None
        header = pd.read_csv(path, nrows=0, **options).columns

        def too_many(fields: list[str]) -> list[str]:
            wide_lines.append(len(fields))
            return [_MARK] * len(header)

        frame = pd.read_csv(path, engine="python", on_bad_lines=too_many, **options)
    except (OSError, UnicodeError) as exc:
        raise StartupError(f"cannot read replay file {path}: {exc}") from None
    frame = frame.fillna("")
    frame.columns = [str(c).strip() for c in frame.columns]
    lines = np.arange(len(frame), dtype=np.int64) + 2
    blank = (frame == "").all(axis=1).to_numpy()
    frame, lines = frame[~blank].reset_index(drop=True), lines[~blank]
    _check_columns(path, frame)
    wide = np.zeros(len(frame), np.int64)
    if wide_lines:
        marked = np.flatnonzero((frame.iloc[:, 0] == _MARK).to_numpy())
        if len(marked) != len(wide_lines):  # the parser did not keep their places
            raise InputError(
                f"replay file {path}: {len(wide_lines)} row(s) have more fields than the "
                "header (quote a field that holds a comma)"
            )
        wide[marked] = wide_lines
    return frame, lines, wide


def _check_columns(path: Path, frame: pd.DataFrame) -> None:
    columns = list(frame.columns)
    shown = ",".join(columns)
    if "timestamp" not in columns:
        raise InputError(f"replay file {path} has no 'timestamp' column (its header: {shown})")
    if not {*schema.METRICS, "value"} & set(columns):
        raise InputError(
            f"replay file {path} needs a column {', '.join(schema.METRICS)} or 'value' "
            f"(its header: {shown})"
        )
    if not len(frame):
        raise InputError(f"replay file {path} has a header but no rows")


def _device_problem(name: str) -> str | None:
    if any("\udc80" <= c <= "\udcff" for c in name):  # bytes that were not UTF-8
        return f"device id {name!r} is not UTF-8"
    return schema.device_problem(name)


def _timestamps(text: pd.Series) -> np.ndarray:
    """Epoch ms (UTC unless the text says otherwise); _NO_TIME where unreadable. ISO 8601
    in one pass; only other texts are tried one by one."""
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    retry = parsed.isna() & (text != "")
    if retry.any():
        parsed[retry] = pd.to_datetime(text[retry], format="mixed", utc=True, errors="coerce")
    ms = parsed.dt.tz_localize(None).to_numpy("datetime64[ms]").astype(np.int64)
    return np.where(parsed.isna().to_numpy(), _NO_TIME, ms)


def _values(
    frame: pd.DataFrame,
    metric: str,
    check: Callable[[np.ndarray, Callable[[int], str]], None],
    rows: np.ndarray,
) -> tuple[np.ndarray, int]:
    """The metrics, rounded to the most decimals their text shows, and that number."""
    values = np.full((len(frame), len(schema.METRICS)), np.nan)
    sources = [(m, m) for m in schema.METRICS if m in frame]
    if not sources:
        sources = [("value", metric)]
    decimals = 0
    numbers = False
    for column, target in sources:
        text = frame[column].str.strip()
        parsed = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
        missing = text.str.lower().isin(_NO_VALUE).to_numpy()
        label = column if column == target else f"{column} ({target})"
        low, high = schema.DOMAINS[target]
        unreadable = np.isnan(parsed) & ~missing
        infinite = np.isinf(parsed)
        outside = (parsed < low) | (parsed > high)
        check(rows & unreadable, lambda i, t=text, c=label: f"{c} {t[i]!r} is not a number")
        check(rows & infinite, lambda i, t=text, c=label: f"{c} {t[i]!r} is not finite")
        check(
            rows & outside & ~infinite,
            lambda i, t=text, c=label, m=target: (
                f"{c} {t[i]!r} is outside its domain {schema.domain_text(m)}"
            ),
        )
        good = rows & np.isfinite(parsed)
        if good.any():
            numbers = True
            decimals = max(decimals, _decimals(text[good]))
        values[:, schema.METRICS.index(target)] = parsed
    decimals = min(decimals, schema.MAX_DECIMALS) if numbers else schema.DECIMALS
    values = np.where(np.isfinite(values), np.round(values, decimals) + 0.0, np.nan)
    return values, decimals


def _decimals(text: pd.Series) -> int:
    """The most decimals a number's text shows (`0.132`: 3, `1.5e-3`: 4, `12`: 0)."""
    text = text.str.lower()
    exponent = text.str.find("e").to_numpy()
    plain = exponent < 0
    dot = text.str.find(".").to_numpy()
    length = text.str.len().to_numpy()
    shown = np.where(plain & (dot >= 0), length - dot - 1, 0)
    most = int(shown.max()) if len(shown) else 0
    for number in text[~plain].unique():  # scientific notation: rare, one by one
        mantissa, _, power = number.partition("e")
        _, _, fraction = mantissa.partition(".")
        try:
            most = max(most, len(fraction) - int(power))
        except ValueError:
            continue
    return max(most, 0)


def _labels(
    frame: pd.DataFrame,
    check: Callable[[np.ndarray, Callable[[int], str]], None],
    rows: np.ndarray,
) -> dict[str, np.ndarray]:
    """Label columns (our own logs carry them; other files have none) as record fields."""
    n = len(frame)
    labels = {
        "anomaly": np.zeros(n, np.uint8),
        "anomaly_metrics": np.zeros(n, np.uint8),
        "anomaly_id": np.zeros(n, np.uint64),
        "anomaly_root": np.zeros(n, np.uint64),
        "event": np.zeros(n, np.uint8),
    }
    for column, kinds in (("anomaly", schema.ANOMALY_KINDS), ("event", schema.EVENT_KINDS)):
        if column not in frame:
            continue
        text = frame[column].str.strip()
        codes, distinct = pd.factorize(text)
        lookup = {"": 0, **{k: i + 1 for i, k in enumerate(kinds)}}
        known = np.array([d in lookup for d in distinct], bool)
        allowed = ", ".join(kinds)
        check(
            rows & ~known[codes],
            lambda i, t=text, c=column, a=allowed: f"{c} {t[i]!r} is not one of {a} (or empty)",
        )
        labels[column] = np.array([lookup.get(d, 0) for d in distinct], np.uint8)[codes]
    for column in ("anomaly_id", "anomaly_root"):
        if column not in frame:
            continue
        text = frame[column].str.strip()
        codes, distinct = pd.factorize(text)
        ids = [_id(str(d)) for d in distinct]
        valid = np.array([i is not None for i in ids], bool)
        check(
            rows & ~valid[codes],
            lambda i, t=text, c=column: f"{c} {t[i]!r} is not a non-negative integer",
        )
        labels[column] = np.array([i or 0 for i in ids], np.uint64)[codes]
    if "anomaly_metrics" in frame:  # our logs since the column exists; earlier ones: not known
        text = frame["anomaly_metrics"].str.strip()
        codes, distinct = pd.factorize(text)
        masks = [_metric_mask(str(d)) for d in distinct]
        known = np.array([m is not None for m in masks], bool)
        check(
            rows & ~known[codes],
            lambda i, t=text: (
                f"anomaly_metrics {t[i]!r} is not metrics of {', '.join(schema.METRICS)} "
                "joined by | (or empty)"
            ),
        )
        labels["anomaly_metrics"] = np.array([m or 0 for m in masks], np.uint8)[codes]
        stray = rows & known[codes] & (labels["anomaly_metrics"] > 0) & (labels["anomaly"] == 0)
        check(
            stray,
            lambda i, t=text: f"anomaly_metrics {t[i]!r} on a sample without an anomaly",
        )
    kind, ids = labels["anomaly"], labels["anomaly_id"]
    texts = [frame[c].str.strip() if c in frame else pd.Series([""] * n) for c in _LABEL_COLUMNS]
    check(
        rows & ((kind > 0) != (ids > 0)),
        lambda i: (
            f"anomaly {texts[0][i]!r} with anomaly_id {texts[1][i]!r}: "
            "a label needs both or neither"
        ),
    )
    return labels


def _metric_mask(text: str) -> int | None:
    """`cpu|net` as a bit mask over schema.METRICS (0 for empty); None if not such a text."""
    if text == "":
        return 0
    names = text.split("|")
    if not set(names) <= set(schema.METRICS):
        return None
    return sum(1 << schema.METRICS.index(name) for name in set(names))


def _id(text: str) -> int | None:
    if text == "":
        return 0
    if not _ID.fullmatch(text):
        return None
    number = int(text.partition(".")[0])
    return number if number < 2**64 else None


def _behind(i: int, stamps: pd.Series, ts: np.ndarray, device: np.ndarray, names: pd.Series) -> str:
    """What is wrong with a row whose time is not after an earlier row of its device."""
    earlier = np.flatnonzero((device[:i] == device[i]) & (ts[:i] >= ts[i]))
    other = int(earlier[np.argmax(ts[earlier])])
    what = "repeats" if ts[other] == ts[i] else "goes back from"
    return (
        f"timestamp {stamps[i]!r} {what} {stamps[other]!r} of an earlier row of device "
        f"{names[i]!r}: a device's rows must move forward in time"
    )


def _problem(checks: list[tuple[np.ndarray, Callable[[int], str]]], i: int) -> str:
    """The first problem of row i, in the order the checks were made."""
    return next(describe(i) for bad, describe in checks if bad[i])


def _steps(ts: np.ndarray, device: np.ndarray) -> np.ndarray:
    """The time between consecutive rows of each device."""
    order = np.lexsort((ts, device))
    same = device[order][1:] == device[order][:-1]
    return np.diff(ts[order])[same]


def _label_windows(
    labels: dict[str, np.ndarray],
    ts: np.ndarray,
    windows: np.ndarray,
    refused: np.ndarray,
    frame: pd.DataFrame,
    metric: str,
) -> None:
    """Label the rows inside each window (inclusive) as one `window` event, id k + 1."""
    present = [m for m in schema.METRICS if m in frame] or [metric]
    mask = sum(1 << schema.METRICS.index(m) for m in present)
    for k, (start, end) in enumerate(windows.tolist()):
        inside = (ts >= start) & (ts <= end) & ~refused
        labels["anomaly"][inside] = schema.ANOMALY_KINDS.index("window") + 1
        labels["anomaly_metrics"][inside] = mask
        labels["anomaly_id"][inside] = k + 1
        labels["anomaly_root"][inside] = 0
