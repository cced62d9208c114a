"""Anomalies with exact ground truth: when they happen, what they do, how they are labelled.

Each device has, in every minute, a chance of an anomaly *candidate* starting at a random
moment, of a kind drawn by weight; a candidate lasts its kind's duration or until the
device's next candidate starts, whichever is first, so anomalies never overlap and the
rate is what was asked. All of it is a pure function of (seed, device, minute), like the
base model.

A sample is labelled if and only if the anomaly changed at least one of its rounded
values: the label is computed by comparing the altered values with the normal ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from common import durations
from common.schema import ANOMALY_KINDS, METRICS
from producer.model import noise
from producer.model.workload import device_indices, finish

BaseAt = Callable[[np.ndarray], np.ndarray]

CPU, MEM, DISK, NET = range(4)
SLOT_MS = 60_000
ID_DEVICES = 100_000  # anomaly_id = minute * ID_DEVICES + device + 1: unique, never 0

# Independent random streams for the parts of a candidate.
_HAS, _OFFSET, _KIND, _DURATION, _METRIC, _SIZE, _SIGN, _NOISE = range(50, 58)


@dataclass(frozen=True)
class Kind:
    name: str
    min_s: float
    max_s: float
    metrics: tuple[int, ...]  # one of these is altered; all of them if `together`
    together: bool = False


CATALOGUE: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("spike", 1, 5, (CPU, DISK, NET)),
        Kind("dip", 5, 30, (CPU, DISK, NET)),
        Kind("level_shift", 60, 300, (CPU, MEM, DISK, NET)),
        Kind("drift", 120, 600, (CPU, MEM, DISK, NET)),
        Kind("stuck", 30, 300, (CPU, MEM, DISK, NET)),
        Kind("dropout", 10, 120, (CPU, MEM, DISK, NET), together=True),
        Kind("noise_burst", 20, 120, (CPU, MEM, DISK, NET)),
        Kind("memory_leak", 180, 600, (MEM,)),
        Kind("incident", 60, 300, (CPU, MEM, DISK, NET), together=True),
    )
}
SIMULATED_KINDS = tuple(CATALOGUE)
assert SIMULATED_KINDS == ANOMALY_KINDS[: len(CATALOGUE)]  # the others are imported
MAX_RATE_PER_HOUR = 60.0
MAX_DURATION_S = 6 * 3600.0  # longest settable duration: bounds how far back events are sought
MAX_WEIGHT = 1000.0
DEFAULT_RATE_PER_HOUR = 1.0  # about 4 % of samples labelled (measured in the tests)


EVENT = np.dtype(
    [
        ("device", "<i8"),  # global device index (not a column position): same in any subset
        ("start", "<i8"),  # ms, first instant it applies
        ("end", "<i8"),  # ms, first instant it no longer applies
        ("length", "<i8"),  # ms, its kind's duration before any truncation (sets its shape)
        ("kind", "u1"),  # 1 + index in ANOMALY_KINDS
        ("metrics", "u1"),  # bit mask over METRICS
        ("id", "<u8"),
        ("size", "<f8"),  # 0..1, how strong
        ("sign", "<f8"),  # +1 or -1
    ]
)


def parse_kinds(text: str) -> dict[str, float]:
    """Kinds and their relative weights, in catalogue order: `all` (every kind, weight 1), a
    comma list of kinds (weight 1 each) or of `kind=weight`; `all,spike=3` changes one of
    all, and weight 0 leaves a kind out. Raise ValueError with a one-line reason."""
    weights: dict[str, float] = {}
    for part in (p.strip().lower() for p in text.split(",")):
        if part == "all":
            weights.update(dict.fromkeys(SIMULATED_KINDS, 1.0))
            continue
        if not part:
            continue
        name, equals, number = (x.strip() for x in part.partition("="))
        if name not in CATALOGUE:
            raise ValueError(
                f"unknown anomaly kind {name!r}; allowed: all, {', '.join(SIMULATED_KINDS)}"
            )
        try:
            weight = float(number) if equals else 1.0
        except ValueError:
            weight = -1.0
        if not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"weight of {name} must be a number 0..{MAX_WEIGHT:g}, got {number!r}")
        weights[name] = weight
    if not weights:
        weights = dict.fromkeys(SIMULATED_KINDS, 1.0)
    chosen = {k: weights[k] for k in SIMULATED_KINDS if weights.get(k, 0) > 0}
    if not chosen:
        raise ValueError(f"every anomaly kind has weight 0 in {text!r}; use --anomaly-rate 0")
    return chosen


def parse_durations(text: str) -> dict[str, tuple[float, float]]:
    """Durations that replace the catalogue's: `kind=MIN-MAX` pairs, comma separated, each
    a duration (common.durations: `90`, `90s`, `5m`, `1h30m`), as in `spike=1-10,drift=5m-20m`;
    `kind=N` fixes it to N. Raise ValueError with a one-line reason."""
    spans: dict[str, tuple[float, float]] = {}
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        name, equals, span = (x.strip() for x in part.partition("="))
        if name not in CATALOGUE:
            raise ValueError(
                f"unknown anomaly kind {name!r}; allowed: {', '.join(SIMULATED_KINDS)}"
            )
        low_text, _, high_text = span.partition("-")
        low, high = _seconds(low_text), _seconds(high_text or low_text)
        if not equals or low is None or high is None:
            raise ValueError(f"{part!r} is not a duration range like {name}=30s-5m")
        if not 0 < low <= high <= MAX_DURATION_S:
            raise ValueError(
                f"duration of {name} must be within 0..6h with MIN <= MAX, got {span!r}"
            )
        spans[name] = (low, high)
    return spans


def _seconds(text: str) -> float | None:
    try:
        return durations.seconds(text)
    except ValueError:
        return None


_WINDOW_SLOTS = 10  # events are computed ten minutes at a time and cached

_KIND_OPTIONS = np.zeros((len(ANOMALY_KINDS) + 1, len(METRICS)), np.int64)
_KIND_OPTION_COUNT = np.ones(len(ANOMALY_KINDS) + 1, np.int64)
_KIND_ALL_MASK = np.zeros(len(ANOMALY_KINDS) + 1, np.uint8)
_KIND_TOGETHER = np.zeros(len(ANOMALY_KINDS) + 1, bool)
for _code, _kind in enumerate(CATALOGUE.values(), start=1):
    _KIND_OPTIONS[_code, : len(_kind.metrics)] = _kind.metrics
    _KIND_OPTION_COUNT[_code] = len(_kind.metrics)
    _KIND_ALL_MASK[_code] = sum(1 << m for m in _kind.metrics)
    _KIND_TOGETHER[_code] = _kind.together


class AnomalyPlan:
    """Where and what the anomalies of a seeded fleet of devices, or of a subset, are.

    `devices` is a count (devices 0..n-1) or an array of global indices; a device's events
    depend on nothing but (seed, its index, time), so a subset has the fleet's events.
    `kinds` names the kinds (equally likely) or maps them to relative weights; `durations`
    replaces the catalogue's (min_s, max_s) of some kinds.
    """

    def __init__(
        self,
        seed: int,
        devices: int | np.ndarray,
        rate_per_hour: float,
        kinds: Iterable[str] | Mapping[str, float] = SIMULATED_KINDS,
        durations: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.seed = seed
        self.indices = device_indices(devices)
        self.devices = len(self.indices)
        self.chance = min(1.0, rate_per_hour * SLOT_MS / 3_600_000)
        weights = kinds if isinstance(kinds, Mapping) else dict.fromkeys(kinds, 1.0)
        weights = {k: w for k, w in weights.items() if w > 0}
        self.kind_codes = np.array([ANOMALY_KINDS.index(k) + 1 for k in weights], np.int64)
        cumulative = np.cumsum(list(weights.values()), dtype=np.float64)
        self._kind_bounds = cumulative[:-1] / cumulative[-1] if len(cumulative) else cumulative
        spans = {k.name: (k.min_s, k.max_s) for k in CATALOGUE.values()} | dict(durations or {})
        self.low_s = np.array([0.0] + [spans[k][0] for k in SIMULATED_KINDS])
        self.high_s = np.array([0.0] + [spans[k][1] for k in SIMULATED_KINDS])
        self.max_duration_ms = int(self.high_s[self.kind_codes].max() * 1000) if weights else 0
        self._lookahead_slots = self.max_duration_ms // SLOT_MS + 1  # to find the next candidate
        self._windows: dict[int, np.ndarray] = {}

    def events(self, first_ms: int, last_ms: int) -> np.ndarray:
        """EVENT records of every anomaly active at some instant in [first_ms, last_ms],
        sorted by (global) device, then start."""
        if self.chance <= 0 or not len(self.kind_codes):
            return np.zeros(0, EVENT)
        lo = (first_ms - self.max_duration_ms) // SLOT_MS // _WINDOW_SLOTS
        hi = last_ms // SLOT_MS // _WINDOW_SLOTS
        tables = [self._window(w) for w in range(lo, hi + 1)]
        if hi - lo < 8 and len(self._windows) > 16:
            keep = range(lo, hi + 1)
            self._windows = {w: t for w, t in self._windows.items() if w in keep}
        events = np.concatenate(tables)
        events = events[(events["end"] > first_ms) & (events["start"] <= last_ms)]
        return events[np.lexsort((events["start"], events["device"]))]

    def _window(self, window: int) -> np.ndarray:
        if window not in self._windows:
            self._windows[window] = self._compute_window(window)
        return self._windows[window]

    def _compute_window(self, window: int) -> np.ndarray:
        """Events starting in this window's slots, each ended by the device's next candidate."""
        seed, device = self.seed, self.indices
        first_slot = window * _WINDOW_SLOTS
        slots = np.arange(first_slot, first_slot + _WINDOW_SLOTS + self._lookahead_slots)
        s = slots[:, None]
        has = noise.uniform(seed, _HAS, device, s) < self.chance
        offset = (noise.uniform(seed, _OFFSET, device, s) * SLOT_MS).astype(np.int64)
        start = s * SLOT_MS + offset
        pick = np.searchsorted(self._kind_bounds, noise.uniform(seed, _KIND, device, s), "right")
        code = self.kind_codes[pick]
        low, high = self.low_s[code], self.high_s[code]
        fraction = noise.uniform(seed, _DURATION, device, s)
        length = ((low + (high - low) * fraction) * 1000).astype(np.int64)
        # The next candidate's start, per device: a reversed running minimum over slots.
        starts_if_any = np.where(has, start, np.iinfo(np.int64).max)
        later = np.minimum.accumulate(starts_if_any[::-1], axis=0)[::-1]
        next_start = np.vstack([later[1:], np.full((1, len(device)), np.iinfo(np.int64).max)])
        end = np.minimum(start + length, next_start)

        slot_i, col_i = np.nonzero(has[:_WINDOW_SLOTS])
        slot_no, dev = slots[slot_i], device[col_i]
        out = np.zeros(len(slot_i), EVENT)
        out["device"] = dev
        out["start"] = start[slot_i, col_i]
        out["end"] = end[slot_i, col_i]
        out["length"] = length[slot_i, col_i]
        kind = code[slot_i, col_i]
        out["kind"] = kind
        out["id"] = slot_no.astype(np.uint64) * ID_DEVICES + dev.astype(np.uint64) + 1
        out["size"] = noise.uniform(seed, _SIZE, dev, slot_no)
        out["sign"] = np.where(noise.uniform(seed, _SIGN, dev, slot_no) < 0.5, -1.0, 1.0)
        option = (noise.uniform(seed, _METRIC, dev, slot_no) * _KIND_OPTION_COUNT[kind]).astype(
            np.int64
        )
        single = (1 << _KIND_OPTIONS[kind, option]).astype(np.uint8)
        out["metrics"] = np.where(_KIND_TOGETHER[kind], _KIND_ALL_MASK[kind], single)
        return out


@dataclass
class Affected:
    """The samples one kind of anomaly alters, flattened, with what each needs to know."""

    values: np.ndarray  # (n, 4), altered in place
    ts: np.ndarray  # (n,)
    device: np.ndarray  # (n,) global device index: the key of any random number
    column: np.ndarray  # (n,) its column in the values array
    position: np.ndarray  # 0..1 through the event's full length
    size: np.ndarray
    sign: np.ndarray
    metric: np.ndarray  # (n,) the metric of single-metric kinds
    event: np.ndarray  # (n,) index into the event table


def apply(
    values: np.ndarray,
    ts_ms: np.ndarray,
    events: np.ndarray,
    seed: int,
    base_at: BaseAt,
    devices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Alter `values` (ticks, columns, 4; raw) by `events`; return them with the labels.

    Returns (values, kind, metrics mask, id), the last three shaped (ticks, columns).
    `devices` is the global index of each column (None: 0..columns-1), which `events`
    (sorted by device, then start) name; events of other devices are ignored.
    `base_at(ts)` gives the model's raw values of the same columns at other instants
    (for stuck sensors).
    """
    ticks, columns = values.shape[:2]
    device = np.arange(columns) if devices is None else np.asarray(devices, np.int64)
    kind = np.zeros((ticks, columns), np.uint8)
    mask = np.zeros((ticks, columns), np.uint8)
    ids = np.zeros((ticks, columns), np.uint64)
    if not len(events):
        return values, kind, mask, ids
    out = values.copy()
    # Find, for every sample, the last event of its device that started at or before it.
    base = min(int(ts_ms.min()), int(events["start"].min()))
    span = max(int(ts_ms.max()), int(events["start"].max())) - base + 1
    event_key = events["device"] * span + (events["start"] - base)
    sample_key = device[None, :] * span + (ts_ms[:, None] - base)
    found = np.searchsorted(event_key, sample_key, side="right") - 1
    found_ok = found >= 0
    candidate = events[np.where(found_ok, found, 0)]
    active = (
        found_ok & (candidate["device"] == device[None, :]) & (ts_ms[:, None] < candidate["end"])
    )
    if not active.any():
        return values, kind, mask, ids
    tick_i, dev_i = np.nonzero(active)
    event_i = found[tick_i, dev_i]
    chosen = events[event_i]
    for code in np.unique(chosen["kind"]):
        sel = chosen["kind"] == code
        t_i, d_i, e_i = tick_i[sel], dev_i[sel], event_i[sel]
        ev = events[e_i]
        position = (ts_ms[t_i] - ev["start"]) / ev["length"]
        affected = Affected(
            values=out[t_i, d_i],
            ts=ts_ms[t_i],
            device=ev["device"],
            column=d_i,
            position=position,
            size=ev["size"],
            sign=ev["sign"],
            metric=_first_metric(ev["metrics"]),
            event=e_i,
        )
        _EFFECTS[ANOMALY_KINDS[code - 1]](affected, events, seed, base_at)
        out[t_i, d_i] = affected.values
    # Exact labels: a sample is labelled iff a rounded value changed (or went missing).
    before, after = finish(values[tick_i, dev_i]), finish(out[tick_i, dev_i])
    changed = ((before != after) & ~(np.isnan(before) & np.isnan(after))).any(axis=1)
    t_i, d_i, chosen = tick_i[changed], dev_i[changed], chosen[changed]
    kind[t_i, d_i] = chosen["kind"]
    mask[t_i, d_i] = chosen["metrics"]
    ids[t_i, d_i] = chosen["id"]
    return out, kind, mask, ids


def _first_metric(masks: np.ndarray) -> np.ndarray:
    metric = np.zeros(len(masks), np.int64)
    for m in reversed(range(len(METRICS))):
        metric = np.where(masks & (1 << m), m, metric)
    return metric


def _set(a: Affected, new_values: np.ndarray) -> None:
    """Write the chosen metric of each sample."""
    a.values[np.arange(len(a.metric)), a.metric] = new_values


def _chosen(a: Affected) -> np.ndarray:
    return a.values[np.arange(len(a.metric)), a.metric]


def _is_percent(a: Affected) -> np.ndarray:
    return a.metric <= MEM


def _spike(a: Affected, *_) -> None:
    v = _chosen(a)
    _set(a, np.where(_is_percent(a), v + 30 + 40 * a.size, v * (4 + 6 * a.size)))


def _dip(a: Affected, *_) -> None:
    _set(a, _chosen(a) * (0.05 + 0.15 * a.size))


def _level_shift(a: Affected, *_) -> None:
    v = _chosen(a)
    ratio = np.where(a.sign > 0, 2 + a.size, 0.25 + 0.25 * a.size)
    _set(a, np.where(_is_percent(a), v + a.sign * (15 + 15 * a.size), v * ratio))


def _drift(a: Affected, *_) -> None:
    v, r = _chosen(a), np.clip(a.position, 0, 1)
    ratio = np.where(a.sign > 0, 1 + (2 + 3 * a.size) * r, 1 - 0.8 * r)
    _set(a, np.where(_is_percent(a), v + a.sign * (20 + 25 * a.size) * r, v * ratio))


def _stuck(a: Affected, events: np.ndarray, seed: int, base_at: BaseAt) -> None:
    """Frozen at what the sensor read one second before the fault."""
    unique_events, inverse = np.unique(a.event, return_inverse=True)
    before = base_at(events["start"][unique_events] - 1000)  # (events, columns, 4)
    _set(a, before[inverse, a.column, a.metric])


def _dropout(a: Affected, *_) -> None:
    a.values[:] = np.nan


def _noise_burst(a: Affected, events: np.ndarray, seed: int, _base_at) -> None:
    v = _chosen(a)
    z = noise.normal(seed, _NOISE, a.device, a.ts)
    _set(
        a, np.where(_is_percent(a), v + (8 + 10 * a.size) * z, v * np.exp((0.6 + 0.6 * a.size) * z))
    )


def _memory_leak(a: Affected, *_) -> None:
    """mem climbs to 97-99 % over 85 % of the event, then a restart leaves it low."""
    mem = a.values[:, MEM]
    target = 97 + 2 * a.size
    climbing = a.position < 0.85
    a.values[:, MEM] = np.where(climbing, mem + (target - mem) * a.position / 0.85, mem * 0.35)


def _incident(a: Affected, *_) -> None:
    """Everything at once: load ramps in over the first 15 % and stays."""
    s = np.clip(a.position / 0.15, 0, 1)
    a.values[:, CPU] += (25 + 20 * a.size) * s
    a.values[:, MEM] += (5 + 10 * a.size) * s
    a.values[:, DISK] *= 1 + (2 + 3 * a.size) * s
    a.values[:, NET] *= 1 + (2 + 4 * a.size) * s


_EFFECTS = {
    "spike": _spike,
    "dip": _dip,
    "level_shift": _level_shift,
    "drift": _drift,
    "stuck": _stuck,
    "dropout": _dropout,
    "noise_burst": _noise_burst,
    "memory_leak": _memory_leak,
    "incident": _incident,
}
