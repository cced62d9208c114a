"""A scenario on the model: scheduled anomalies (roots and symptoms), planned events
(maintenance, deploys, load tests) and each group's own random anomalies.

Resolved once against the series' start for the devices a source owns; every part is a
pure function of (seed, scenario, series start, device, time), so each shard and each
backfill chunk computes the very same episodes for a device.

Ids: incident k's root is ID_BASE + k * PER_INCIDENT and its j-th symptom that plus j, so
a sample's root follows from its anomaly_id alone (`root_ids`). Precedence on a device: a
scheduled anomaly lasts until its duration ends or the device's next scheduled one
starts; a random anomaly ends where a scheduled anomaly or a maintenance starts, and none
starts while one runs; a planned event lasts until its duration ends or the device's next
planned event starts. Random anomalies may happen during deploys and load tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from common.schema import ANOMALY_KINDS, EVENT_KINDS
from producer.model.anomalies import EVENT, AnomalyPlan
from producer.model.scenario import MAX_SYMPTOMS, Scenario

ID_BASE = 8 * 10**15  # above random (< 2**49) and injected (2**52 + shard * 2**44) ids, < 2**53
PER_INCIDENT = MAX_SYMPTOMS + 1  # ids of one incident: its root, then its symptoms (10**6)
CPU, MEM, DISK, NET = range(4)

PLANNED = np.dtype(
    [
        ("device", "<i8"),  # global device index
        ("start", "<i8"),  # ms
        ("end", "<i8"),  # ms, first instant it no longer applies
        ("length", "<i8"),  # ms, its duration before any truncation (sets its shape)
        ("code", "u1"),  # 1 + index in EVENT_KINDS
        ("quiet", "?"),  # maintenance: idle values instead of none
        ("factor", "<f8"),  # load_test
    ]
)
_MAINTENANCE = EVENT_KINDS.index("maintenance") + 1


def root_ids(ids: np.ndarray) -> np.ndarray:
    """The anomaly_root of each anomaly_id (0 stays 0): a symptom's root is its incident's
    root; every other anomaly is its own root."""
    scheduled = ids >= ID_BASE
    if not scheduled.any():
        return ids
    offset = np.uint64(ID_BASE)
    return np.where(scheduled, ids - (ids - offset) % np.uint64(PER_INCIDENT), ids)


def scheduled(scenario: Scenario, origin_ms: int) -> np.ndarray:
    """EVENT records of every incident's root and symptoms, whole fleet, in file order."""
    records = []
    for incident in scenario.incidents:
        start = incident.at.resolve(origin_ms)
        base = ID_BASE + incident.number * PER_INCIDENT
        for j, anomaly in enumerate((incident.root, *incident.symptoms)):
            begin = start + anomaly.delay_ms
            records.append(
                (
                    anomaly.device,
                    begin,
                    begin + anomaly.duration_ms,
                    anomaly.duration_ms,
                    ANOMALY_KINDS.index(anomaly.kind) + 1,
                    anomaly.metrics,
                    base + j,
                    anomaly.size,
                    anomaly.sign,
                )
            )
    return np.array(records, EVENT)


def planned(scenario: Scenario, origin_ms: int) -> np.ndarray:
    """PLANNED records of every maintenance, deploy and load test, whole fleet."""
    records = []
    for episode in scenario.planned:
        start = episode.at.resolve(origin_ms)
        code = EVENT_KINDS.index(episode.kind) + 1
        for turn, device in enumerate(episode.devices):
            begin = start + turn * episode.every_ms
            end = begin + episode.duration_ms
            records.append(
                (device, begin, end, episode.duration_ms, code, episode.quiet, episode.factor)
            )
    return np.array(records, PLANNED)


def _one_at_a_time(records: np.ndarray) -> np.ndarray:
    """Sorted by (device, start), each cut where its device's next one starts."""
    records = records[np.lexsort((records["start"], records["device"]))]
    if len(records) > 1:
        same = records["device"][1:] == records["device"][:-1]
        following = np.where(same, records["start"][1:], np.iinfo(np.int64).max)
        records["end"][:-1] = np.minimum(records["end"][:-1], following)
    return records[records["end"] > records["start"]]


class Timeline:
    """The scenario's episodes on the owned devices (increasing global indices), and their
    random anomalies, group by group: `rate`, `kinds` and `durations` are the command
    line's, which a group's own settings replace."""

    def __init__(
        self,
        scenario: Scenario,
        origin_ms: int,
        seed: int,
        devices: np.ndarray,
        rate: float,
        kinds: Iterable[str] | Mapping[str, float],
        durations: Mapping[str, tuple[float, float]] | None,
    ) -> None:
        self.scenario = scenario
        self.devices = np.asarray(devices, np.int64)
        owned = self.devices
        table = scheduled(scenario, origin_ms)
        self.scheduled = _one_at_a_time(table[np.isin(table["device"], owned)])
        plan = planned(scenario, origin_ms)
        self.planned = _one_at_a_time(plan[np.isin(plan["device"], owned)])
        maintenance = self.planned[self.planned["code"] == _MAINTENANCE]
        self._blocks = _union(
            np.concatenate([self.scheduled["device"], maintenance["device"]]),
            np.concatenate([self.scheduled["start"], maintenance["start"]]),
            np.concatenate([self.scheduled["end"], maintenance["end"]]),
        )
        self.plans = _plans(scenario, seed, owned, rate, kinds, dict(durations or {}))

    def events(self, first_ms: int, last_ms: int) -> np.ndarray:
        """EVENT records of every anomaly active at some instant in [first_ms, last_ms],
        random and scheduled, sorted by device, then start (AnomalyPlan.events' contract)."""
        parts = [self._suppress(plan.events(first_ms, last_ms)) for plan in self.plans]
        table = self.scheduled
        parts.append(table[(table["end"] > first_ms) & (table["start"] <= last_ms)])
        events = np.concatenate(parts)
        return events[np.lexsort((events["start"], events["device"]))]

    def _suppress(self, random: np.ndarray) -> np.ndarray:
        """Random anomalies without those starting inside a block, cut where one starts."""
        blocks = self._blocks
        if not len(random) or not blocks:
            return random
        hit = np.flatnonzero(np.isin(random["device"], list(blocks)))
        if not len(hit):
            return random
        random = random.copy()
        keep = np.ones(len(random), bool)
        for i in hit:
            starts, ends = blocks[int(random["device"][i])]
            start = random["start"][i]
            k = int(np.searchsorted(starts, start, side="right"))
            if k and ends[k - 1] > start:
                keep[i] = False
            elif k < len(starts):
                random["end"][i] = min(random["end"][i], starts[k])
        return random[keep]

    def apply_planned(self, values: np.ndarray, ts_ms: np.ndarray) -> np.ndarray | None:
        """Alter `values` (ticks, owned devices, 4; raw) in place by the planned events, and
        return each sample's event code (None if no sample is in one). A sample is labelled
        with an event iff its time lies in the event's span on its device."""
        plan = self.planned
        if not len(plan) or not len(ts_ms):
            return None
        plan = plan[(plan["end"] > ts_ms.min()) & (plan["start"] <= ts_ms.max())]
        if not len(plan):
            return None
        if len(ts_ms) > 1 and (np.diff(ts_ms) < 0).any():
            order = np.argsort(ts_ms, kind="stable")
            part = values[order]
            codes = self._apply_sorted(part, ts_ms[order], plan)
            values[order] = part
            out = np.zeros_like(codes)
            out[order] = codes
            return out
        return self._apply_sorted(values, ts_ms, plan)

    def _apply_sorted(self, values: np.ndarray, ts_ms: np.ndarray, plan: np.ndarray) -> np.ndarray:
        lo = np.searchsorted(ts_ms, plan["start"], side="left")
        hi = np.searchsorted(ts_ms, plan["end"], side="left")
        counts = hi - lo
        codes = np.zeros(values.shape[:2], np.uint8)
        which = np.repeat(np.arange(len(plan)), counts)
        row = lo[which] + np.arange(len(which)) - np.repeat(np.cumsum(counts) - counts, counts)
        event = plan[which]
        column = np.searchsorted(self.devices, plan["device"])[which]
        position = (ts_ms[row] - event["start"]) / event["length"]
        for code in np.unique(event["code"]):
            sel = event["code"] == code
            r, c = row[sel], column[sel]
            part = values[r, c]
            _EFFECTS[EVENT_KINDS[code - 1]](part, position[sel], event[sel])
            values[r, c] = part
            codes[r, c] = code
        return codes


def _union(device: np.ndarray, start: np.ndarray, end: np.ndarray) -> dict:
    """Per device, its blocked spans merged: (starts, ends), sorted and disjoint."""
    out = {}
    for d in np.unique(device):
        mine = device == d
        order = np.argsort(start[mine], kind="stable")
        starts, ends = start[mine][order], end[mine][order]
        merged_s, merged_e = [int(starts[0])], [int(ends[0])]
        for s, e in zip(starts[1:].tolist(), ends[1:].tolist(), strict=True):
            if s <= merged_e[-1]:
                merged_e[-1] = max(merged_e[-1], e)
            else:
                merged_s.append(s)
                merged_e.append(e)
        out[int(d)] = (np.array(merged_s, np.int64), np.array(merged_e, np.int64))
    return out


def _plans(
    scenario: Scenario,
    seed: int,
    owned: np.ndarray,
    rate: float,
    kinds: Iterable[str] | Mapping[str, float],
    durations: dict[str, tuple[float, float]],
) -> list[AnomalyPlan]:
    """One AnomalyPlan per distinct setting among the owned devices' groups (a device's
    random anomalies depend only on its index and settings, so splitting changes nothing)."""
    by_setting: dict[tuple, list[np.ndarray]] = {}
    settings: dict[tuple, tuple] = {}
    for group in scenario.groups:
        indices = np.arange(group.first, group.first + len(group.devices))
        mine = indices[np.isin(indices, owned)]
        if not len(mine):
            continue
        g_rate = rate if group.anomaly_rate is None else group.anomaly_rate
        g_kinds = kinds if group.anomaly_kinds is None else group.anomaly_kinds
        g_durations = durations | dict(group.anomaly_durations or {})
        weights = dict(g_kinds) if isinstance(g_kinds, Mapping) else dict.fromkeys(g_kinds, 1.0)
        key = (g_rate, tuple(weights.items()), tuple(sorted(g_durations.items())))
        by_setting.setdefault(key, []).append(mine)
        settings[key] = (g_rate, weights, g_durations)
    plans = []
    for key, parts in by_setting.items():
        g_rate, weights, g_durations = settings[key]
        if g_rate > 0:
            plans.append(AnomalyPlan(seed, np.concatenate(parts), g_rate, weights, g_durations))
    return plans


def _maintenance(values: np.ndarray, position: np.ndarray, event: np.ndarray) -> None:
    """Down: the device reports nothing. Quiet: services stopped, values drop to idle."""
    quiet = event["quiet"][:, None]
    idle = values * np.array([0.08, 0.6, 0.05, 0.05])
    values[:] = np.where(quiet, idle, np.nan)


def _deploy(values: np.ndarray, position: np.ndarray, event: np.ndarray) -> None:
    """A restart: mem starts low and grows back, cpu warms up, traffic drains and returns."""
    values[:, CPU] += 35.0 * np.exp(-6.0 * position)
    values[:, MEM] *= 0.35 + 0.65 * np.minimum(position / 0.8, 1.0)
    values[:, NET] *= 0.2 + 0.8 * np.minimum(position / 0.2, 1.0)


def _load_test(values: np.ndarray, position: np.ndarray, event: np.ndarray) -> None:
    """The load times `factor`, ramped in and out over a tenth of the test each."""
    ramp = np.clip(np.minimum(position, 1.0 - position) / 0.1, 0.0, 1.0)
    gain = 1.0 + (event["factor"] - 1.0) * ramp
    values[:, CPU] *= gain
    values[:, DISK] *= gain
    values[:, NET] *= gain
    values[:, MEM] += 10.0 * (1.0 - 1.0 / event["factor"]) * ramp


_EFFECTS = {"maintenance": _maintenance, "deploy": _deploy, "load_test": _load_test}


def describe(scenario: Scenario, origin_ms: int) -> str:
    """The fleet by group and every episode with its time and ids, for a series starting at
    `origin_ms` (`python -m producer scenario`)."""
    names = scenario.devices
    lines = [f"{scenario.name}: {scenario.description}" if scenario.description else scenario.name]
    lines += ["", f"fleet ({len(names)} devices):"]
    for group in scenario.groups:
        ids = group.devices[0] + (f" .. {group.devices[-1]}" if len(group.devices) > 1 else "")
        rate = "" if group.anomaly_rate is None else f", {group.anomaly_rate:g} anomalies/h"
        lines.append(f"  {group.name}: {len(group.devices)} x {group.role.name}, {ids}{rate}")
    lines += ["", f"timeline (the series starting {_when(origin_ms)}):"]
    episodes: list[tuple[int, str]] = []
    for incident in scenario.incidents:
        start = incident.at.resolve(origin_ms)
        root_id = ID_BASE + incident.number * PER_INCIDENT
        for j, anomaly in enumerate((incident.root, *incident.symptoms)):
            what = f"incident {incident.number} ({incident.name}): root" if not j else "  symptom"
            episodes.append(
                (
                    start + anomaly.delay_ms,
                    f"{what} {names[anomaly.device]} {anomaly.kind} "
                    f"for {_span(anomaly.duration_ms)}, anomaly_id {root_id + j}",
                )
            )
    for episode in scenario.planned:
        start = episode.at.resolve(origin_ms)
        mode = " (quiet)" if episode.quiet else " (down)" if episode.kind == "maintenance" else ""
        factor = f" x{episode.factor:g}" if episode.kind == "load_test" else ""
        for turn, device in enumerate(episode.devices):
            episodes.append(
                (
                    start + turn * episode.every_ms,
                    f"{episode.kind}{mode}{factor} {names[device]} "
                    f"for {_span(episode.duration_ms)}",
                )
            )
    lines += [f"  {_when(at)}  {text}" for at, text in sorted(episodes, key=lambda e: e[0])]
    if not episodes:
        lines.append("  no episodes: each group's random anomalies only")
    return "\n".join(lines)


def _when(ms: int) -> str:
    return np.datetime_as_string(np.datetime64(ms, "ms"), unit="s").replace("T", " ")


def _span(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms / 1000:g}s"
