"""The simulated fleet as a source: the model and its anomalies on a series' tick grid."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from common import schema
from producer.model.anomalies import EVENT, SIMULATED_KINDS, AnomalyPlan, apply
from producer.model.roles import DEFAULT_MIX, Role, RoleMix
from producer.model.scenario import Scenario
from producer.model.timeline import Timeline, root_ids
from producer.model.workload import Model, finish
from producer.sources import build_rows
from producer.sources.series import Series

log = logging.getLogger(__name__)

PREFETCH_S = 0.1  # generate this much wall time of ticks at once, ahead of their deadlines
PREFETCH_MIN_TICKS = 32  # at low rates: generating one tick costs about as much as 32
PREFETCH_ROWS = 20_000
_BEFORE_KEPT = 512  # instants whose model values are kept for stuck sensors


def device_name(index: int) -> str:
    """host-01, host-02, ..., host-100: a device keeps its name when the count grows."""
    return f"host-{index + 1:02d}"


class SimSource:
    """Ticks of a series turned into samples, anomalies labelled: every owned device per tick.

    `devices` are the global indices this source owns (None: all of the series'); it
    publishes exactly the full fleet's rows for them, at a cost in proportion to them.
    `anomaly_kinds` names kinds or maps them to weights, `anomaly_durations` replaces
    some kinds' (min_s, max_s), and `roles` gives each device its role: a mix, or one Role
    per device of the whole fleet (by global index). A `scenario` names the devices, gives
    their roles and adds its timeline, whose relative times count from the series' start.
    """

    def __init__(
        self,
        series: Series,
        anomaly_rate: float,
        anomaly_kinds: Iterable[str] | Mapping[str, float],
        first_tick: int = 0,
        max_lag_s: float = 5.0,
        devices: np.ndarray | Sequence[int] | None = None,
        anomaly_durations: Mapping[str, tuple[float, float]] | None = None,
        roles: RoleMix | Sequence[Role] = DEFAULT_MIX,
        scenario: Scenario | None = None,
    ) -> None:
        self.device_indices = _owned(series.devices, devices)  # increasing global indices
        fleet = [device_name(i) for i in range(series.devices)] if scenario is None else None
        if scenario is not None:
            fleet, roles = scenario.devices, scenario.roles
            if len(fleet) != series.devices:
                raise ValueError(
                    f"the scenario has {len(fleet)} devices, the series {series.devices}"
                )
        if not isinstance(roles, RoleMix):
            if len(roles) != series.devices:
                raise ValueError(
                    f"roles must name one role per device: {len(roles)} for {series.devices}"
                )
            roles = [roles[int(i)] for i in self.device_indices]
        self.model = Model(series.seed, self.device_indices, roles)
        self.scenario = scenario
        self.timeline: Timeline | None = None
        if scenario is None:
            self.anomalies: AnomalyPlan | Timeline = AnomalyPlan(
                series.seed, self.device_indices, anomaly_rate, anomaly_kinds, anomaly_durations
            )
        else:
            self.anomalies = self.timeline = Timeline(
                scenario,
                series.origin_ms,  # kept when the rate changes: the scenario's clock goes on
                series.seed,
                self.device_indices,
                anomaly_rate,
                anomaly_kinds,
                anomaly_durations,
            )
        names = [fleet[int(i)] for i in self.device_indices]
        self.device_names = names
        self.role_names = [r.name for r in self.model.roles]
        self._devices = np.array(names, dtype=schema.DEVICE_DTYPE)
        self.max_lag_s = max_lag_s
        self.injected = np.zeros(0, EVENT)  # anomalies asked for at run time
        self._before: dict[int, np.ndarray] = {}  # model values at the instants stuck sensors hold
        self.follow(series, first_tick)

    def follow(self, series: Series, first_tick: int) -> None:
        """Publish `series` from `first_tick` on (at start, and when the rate changes)."""
        self.series = series
        self.next_tick = first_tick
        self.change: tuple[int, Series] | None = None  # (tick, series) to follow from then
        self.precision = schema.precision_for_rate(series.rate)
        owned = len(self.device_indices)
        self.ticks_per_message = max(1, schema.ROWS_PER_MESSAGE // owned)
        ticks_per_s = series.rate * series.speed
        wanted = max(round(ticks_per_s * PREFETCH_S), PREFETCH_MIN_TICKS)
        self.prefetch_ticks = max(1, min(wanted, PREFETCH_ROWS // owned))
        self._ready: schema.Batch | None = None  # generated ahead: ticks _ready_first..
        self._ready_first = 0

    def change_at(self, tick: int, series: Series) -> None:
        """Follow `series` (a rate change) from this series' `tick` on: now if it is next,
        else once the ticks before it are published."""
        if tick <= self.next_tick:
            self.follow(series, 0)
        else:
            self.change = (tick, series)

    def inject(self, event: np.ndarray) -> None:
        """Add anomalies (EVENT records naming global device indices) from now on."""
        self.injected = np.concatenate([self.injected, event])
        self._ready = None  # what was generated ahead did not have it

    def describe(self) -> str:
        s = self.series
        speed = f", speed x{s.speed:g}" if s.speed != 1 else ""
        owned = len(self.device_indices)
        count = f"{owned} of {s.devices}" if owned < s.devices else f"{s.devices}"
        scenario = ""
        if self.timeline is not None:
            episodes = len(self.timeline.scheduled) + len(self.timeline.planned)
            scenario = f" of scenario {self.timeline.scenario.name!r} ({episodes} episode(s) here)"
        return (
            f"simulating {count} device(s){scenario} at {s.rate:g} Hz{speed}, seed {s.seed}, "
            f"from seq {s.seq_base + self.next_tick}"
        )

    def next_due_ms(self) -> float:
        return self.series.due_ms(self.next_tick)

    def fleet(self) -> dict:
        """What a dashboard shows beside the samples: each device's group, the anomaly kinds
        its random anomalies and scenario can make (`ctl inject` may add any simulated kind),
        the planned events of the scenario on these devices, and the clock's speed."""
        plans = [self.anomalies] if self.timeline is None else self.timeline.plans
        codes = {int(c) for plan in plans if plan.chance > 0 for c in plan.kind_codes}
        info: dict = {"speed": self.series.speed, "origin_ms": self.series.origin_ms}
        if self.timeline is not None:
            codes |= {int(c) for c in self.timeline.scheduled["kind"]}
            group = {
                name: g.name for g in self.timeline.scenario.groups for name in g.devices
            }
            info["groups"] = {name: group[name] for name in self.device_names}
            where = dict(zip(self.device_indices.tolist(), self.device_names, strict=True))
            planned = self.timeline.planned
            info["planned"] = [
                {
                    "device": where[int(p["device"])],
                    "kind": schema.EVENT_KINDS[int(p["code"]) - 1],
                    "start_ms": int(p["start"]),
                    "end_ms": int(p["end"]),
                }
                for p in planned[np.argsort(planned["start"], kind="stable")]
            ]
            info["event_kinds"] = sorted(
                {e["kind"] for e in info["planned"]}, key=schema.EVENT_KINDS.index
            )
        info["anomaly_kinds"] = [schema.ANOMALY_KINDS[c - 1] for c in sorted(codes)]
        info["injectable_kinds"] = list(SIMULATED_KINDS)
        return info

    def take(self, now_ms: float) -> list[schema.Batch]:
        if self.change is not None and self.next_tick >= self.change[0]:
            self.follow(self.change[1], 0)
        series = self.series
        last = max(self.next_tick, series.last_tick_due_by(now_ms))
        if self.change is not None:
            last = min(last, self.change[0] - 1)  # the rest belongs to the changed series
        behind_s = (last - self.next_tick) / (series.rate * series.speed)
        if behind_s > self.max_lag_s:
            # Suspended or starved: skip rather than flood subscribers with stale samples.
            log.warning(
                "%.1f s behind schedule; skipping seq %d..%d",
                behind_s,
                series.seq_base + self.next_tick,
                series.seq_base + last - 1,
            )
            self.next_tick = last
        batches = [
            self._ticks(first, min(last, first + self.ticks_per_message - 1))
            for first in range(self.next_tick, last + 1, self.ticks_per_message)
        ]
        self.next_tick = last + 1
        return batches

    def prefetch(self) -> np.ndarray | None:
        if self._ready is None or not self._holds(self.next_tick, self.next_tick):
            last = self.next_tick + self.prefetch_ticks - 1
            self._ready, self._ready_first = self.batch(self.next_tick, last), self.next_tick
            return self._ready.rows
        return None

    def _holds(self, first: int, last: int) -> bool:
        ready = self._ready
        if ready is None:
            return False
        ticks = len(ready) // len(self.device_indices)
        return self._ready_first <= first and last < self._ready_first + ticks

    def _ticks(self, first: int, last: int) -> schema.Batch:
        """Ticks first..last, from what was generated ahead when possible."""
        if not self._holds(first, last):
            return self.batch(first, last)
        assert self._ready is not None
        d = len(self.device_indices)
        start = (first - self._ready_first) * d
        rows = self._ready.rows[start : start + (last - first + 1) * d]
        return schema.Batch(rows=rows, precision=self.precision)

    def batch(self, first: int, last: int) -> schema.Batch:
        """Ticks first..last inclusive, tick-major, owned devices in index order within a tick."""
        ticks = np.arange(first, last + 1)
        ts_ms = self.series.time_ms(ticks)
        raw = self.model.values(ts_ms)
        planned = None if self.timeline is None else self.timeline.apply_planned(raw, ts_ms)
        events = self.anomalies.events(int(ts_ms[0]), int(ts_ms[-1]))
        if len(self.injected):
            live = self.injected[
                (self.injected["end"] > ts_ms[0]) & (self.injected["start"] <= ts_ms[-1])
            ]
            events = np.concatenate([events, live])
            events = events[np.lexsort((events["start"], events["device"]))]
        raw, kind, mask, ids = apply(
            raw, ts_ms, events, self.series.seed, self._values_before, self.device_indices
        )
        values = finish(raw)
        n, d = len(ticks), len(self.device_indices)
        rows = build_rows(
            ts_ms=np.repeat(ts_ms, d),
            seq=np.repeat(self.series.seq_base + ticks, d),
            devices=np.tile(self._devices, n),
            values=values.reshape(n * d, len(schema.METRICS)),
        )
        # Labels are usually rare: then they are written to the labelled rows only (whole
        # strided columns cost 17 ns a sample; a few rows' gather and scatter next to nothing).
        labelled = np.flatnonzero(kind)
        if len(labelled) > len(rows) // 8:
            rows["anomaly"] = kind.ravel()
            rows["anomaly_metrics"] = mask.ravel()
            rows["anomaly_id"] = ids.ravel()
            rows["anomaly_root"] = root_ids(ids.ravel())
        elif len(labelled):
            part = rows[labelled]
            part["anomaly"] = kind.ravel()[labelled]
            part["anomaly_metrics"] = mask.ravel()[labelled]
            part["anomaly_id"] = ids.ravel()[labelled]
            part["anomaly_root"] = root_ids(part["anomaly_id"])
            rows[labelled] = part
        if planned is not None:
            marked = np.flatnonzero(planned)
            rows["event"][marked] = planned.ravel()[marked]
        return schema.Batch(rows=rows, precision=self.precision)

    def _values_before(self, ts_ms: np.ndarray) -> np.ndarray:
        """Model values at these instants, kept: a stuck sensor's instant recurs every tick."""
        wanted = [int(t) for t in ts_ms.tolist()]
        missing = [t for t in dict.fromkeys(wanted) if t not in self._before]
        if missing:
            if len(self._before) + len(missing) > _BEFORE_KEPT:
                self._before = {t: self._before[t] for t in wanted if t in self._before}
            instants = np.array(missing, np.int64)
            fresh = self.model.values(instants)
            if self.timeline is not None:  # a sensor stuck in a deploy holds the deploy's value
                self.timeline.apply_planned(fresh, instants)
            self._before.update(zip(missing, fresh, strict=True))
        return np.stack([self._before[t] for t in wanted])


def _owned(fleet: int, devices: np.ndarray | Sequence[int] | None) -> np.ndarray:
    """The owned global indices, sorted and unique; ValueError unless some, all in the fleet."""
    if devices is None:
        return np.arange(fleet, dtype=np.int64)
    indices = np.asarray(devices)
    if indices.ndim != 1 or not len(indices) or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"devices must be a non-empty 1-D array of indices, got {devices!r}")
    indices = np.unique(indices).astype(np.int64)
    if indices[0] < 0 or indices[-1] >= fleet:
        raise ValueError(f"device indices must be within 0..{fleet - 1}, got {indices.tolist()}")
    return indices
