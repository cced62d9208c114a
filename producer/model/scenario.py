"""Scenario files: a fleet of device groups and a timeline of planned episodes, in TOML.

A scenario is read with the standard library's tomllib and checked whole before anything
runs; a problem is one line naming the file, the line and the key, e.g.
`scenarios/x.toml line 12: group[1].role: unknown role 'dbx'; allowed: idle, web, ...`.
Times are kept as written (absolute, `+2h` after the series' start, or `day 2 10:00`) and
only resolved against a series' start by producer.model.timeline, so a file means the
same data wherever and whenever it runs.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, NoReturn

from common import durations
from common.schema import EVENT_KINDS, METRICS, device_problem
from producer.model import anomalies
from producer.model.roles import EPISODE_KINDS, ROLES, Role, override

MAX_DEVICES = 100_000  # as --devices
MAX_EPISODE_MS = 7 * 86_400_000  # longest scheduled anomaly or planned event
MAX_FACTOR = 20.0  # a load test multiplies the load by at most this
MAX_SYMPTOMS = 999_999  # per incident: its ids are the root's plus 1..MAX_SYMPTOMS
DAY_MS = 86_400_000
_DAY = re.compile(r"day\s+(\d+)(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?")

Path_ = tuple[str | int, ...]  # a key path: ("group", 1, "role")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message is one line with file, line and key."""


@dataclass(frozen=True)
class Moment:
    """When an episode starts: an absolute time, an offset from the series' start (`+2h`),
    or a time of day N of it (`day 2 10:00`, day 1 being the start's UTC date)."""

    text: str
    absolute_ms: int | None = None
    offset_ms: int = 0
    day: int | None = None

    def resolve(self, origin_ms: int) -> int:
        """Epoch milliseconds, for a series whose first sample is at `origin_ms`."""
        if self.absolute_ms is not None:
            return self.absolute_ms
        if self.day is None:
            return origin_ms + self.offset_ms
        return origin_ms // DAY_MS * DAY_MS + (self.day - 1) * DAY_MS + self.offset_ms


@dataclass(frozen=True)
class Anomaly:
    """One scheduled anomaly of an incident: its device (global index) and what it does."""

    device: int
    kind: str
    metrics: int  # bit mask over METRICS
    delay_ms: int  # after the incident's start
    duration_ms: int
    size: float  # 0..1
    sign: float  # +1 up, -1 down


@dataclass(frozen=True)
class Incident:
    """A root anomaly and the symptoms it causes on other devices, later."""

    number: int  # 1, 2, ... in file order: it makes the ids (producer.model.timeline)
    name: str
    at: Moment
    root: Anomaly
    symptoms: tuple[Anomaly, ...]


@dataclass(frozen=True)
class Planned:
    """Maintenance, a deploy or a load test: expected, labelled as an event, not an anomaly.

    The devices take their turns in order, `every_ms` apart (0: all at once)."""

    kind: str  # one of EVENT_KINDS
    at: Moment
    devices: tuple[int, ...]
    every_ms: int
    duration_ms: int
    quiet: bool = False  # maintenance: values drop to idle instead of the device going down
    factor: float = 1.0  # load_test: the load multiplied by this


@dataclass(frozen=True)
class Group:
    """Devices of one role, named from a pattern; anomaly settings left None follow the
    command line's."""

    name: str
    role: Role
    devices: tuple[str, ...]
    first: int  # global index of its first device
    anomaly_rate: float | None = None
    anomaly_kinds: Mapping[str, float] | None = None
    anomaly_durations: Mapping[str, tuple[float, float]] | None = None


@dataclass(frozen=True)
class Scenario:
    file: str
    name: str
    description: str
    groups: tuple[Group, ...]
    incidents: tuple[Incident, ...]
    planned: tuple[Planned, ...]

    @property
    def devices(self) -> list[str]:
        """Every device id of the fleet, by global index."""
        return [name for group in self.groups for name in group.devices]

    @property
    def roles(self) -> list[Role]:
        """Every device's role, by global index (one Role object per group)."""
        return [group.role for group in self.groups for _ in group.devices]


def load(path: Path | str) -> Scenario:
    """Read and check a scenario file; raise ScenarioError (one line) if it cannot be used."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ScenarioError(f"cannot read scenario {path}: {reason}") from None
    return parse(text, str(path))


def parse(text: str, file: str = "<scenario>") -> Scenario:
    """A scenario from TOML text; `file` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        where = f" line {match[1]}" if match else ""
        detail = message[: match.start()].strip() if match else message
        column = f" (column {match[2]})" if match else ""
        raise ScenarioError(f"{file}{where}: not valid TOML: {detail.lower()}{column}") from None
    return _Reader(file, text).scenario(data)


class _Reader:
    """Turns the parsed TOML into a Scenario, failing with the line of the key at fault."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.lines = _key_lines(text)
        self.index: dict[str, int] = {}  # device id -> global index
        self.groups: dict[str, list[int]] = {}

    def fail(self, path: Path_, message: str) -> NoReturn:
        line = 1
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                line = self.lines[path[:end]]
                break
        raise ScenarioError(f"{self.file} line {line}: {_dotted(path)}: {message}")

    def scenario(self, data: dict[str, Any]) -> Scenario:
        top = ("name", "description", "group", *_EPISODES)
        self.known(data, (), top)
        name = self.text(data, ("name",), default=Path(self.file).stem)
        description = self.text(data, ("description",), default="")
        groups_data = data.get("group")
        if not isinstance(groups_data, list) or not groups_data:
            self.fail(("group",), "a scenario needs a fleet: one or more [[group]] tables")
        groups: list[Group] = []
        for i, item in enumerate(groups_data):
            groups.append(self.group(self.table(item, ("group", i)), ("group", i), len(self.index)))
        incidents = tuple(
            self.incident(self.table(item, ("incident", i)), ("incident", i), i + 1)
            for i, item in enumerate(self.array(data, "incident"))
        )
        planned = tuple(
            self.planned(self.table(item, (kind, i)), (kind, i), kind)
            for kind in EVENT_KINDS
            for i, item in enumerate(self.array(data, kind))
        )
        return Scenario(self.file, name, description, tuple(groups), incidents, planned)

    # The fleet

    def group(self, data: dict[str, Any], path: Path_, first: int) -> Group:
        self.known(data, path, ("name", "role", "count", "id", "params", "anomalies"))
        role_name = self.text(data, (*path, "role"))
        if role_name not in ROLES:
            self.fail((*path, "role"), f"unknown role {role_name!r}; allowed: {', '.join(ROLES)}")
        name = self.text(data, (*path, "name"), default=role_name)
        if name in self.groups:
            self.fail((*path, "name"), f"group name {name!r} is used twice; give one a name")
        count = self.integer(data, (*path, "count"), 1, MAX_DEVICES)
        pattern = self.text(data, (*path, "id"), default=name + "-{n:02d}")
        devices = []
        for n in range(1, count + 1):
            try:
                device = pattern.format(n=n)
            except (KeyError, IndexError, ValueError) as exc:
                message = f"{pattern!r} is not a pattern like 'web-{{n:02d}}': {exc}"
                self.fail((*path, "id"), message)
            problem = device_problem(device)
            if problem:
                self.fail((*path, "id"), problem)
            if device in self.index:
                self.fail((*path, "id"), f"device id {device!r} is used twice in the fleet")
            self.index[device] = len(self.index)
            devices.append(device)
        if len(self.index) > MAX_DEVICES:
            self.fail((*path, "count"), f"a fleet has at most {MAX_DEVICES} devices")
        self.groups[name] = list(range(first, first + count))
        role = self.role(ROLES[role_name], data.get("params"), (*path, "params"))
        settings = self.anomaly_settings(data.get("anomalies"), (*path, "anomalies"))
        return Group(name, role, tuple(devices), first, *settings)

    def role(self, role: Role, params: Any, path: Path_) -> Role:
        """The role with a group's changes: `cpu = 30`, `surges.per_day = 6` or a table
        `[group.params.surges]`."""
        if params is None:
            return role
        changes: dict[str, Any] = {}
        for key, value in self.table(params, path).items():
            if key in EPISODE_KINDS and isinstance(value, dict):
                for inner, v in value.items():
                    changes[f"{key}.{inner}"] = self.param(v, (*path, key, inner), inner)
            else:
                changes[key] = self.param(value, (*path, key), key)
        for key in changes:
            try:
                role = override(role, {key: changes[key]})
            except (ValueError, TypeError) as exc:
                self.fail((*path, *key.split(".")), str(exc))
        return role

    def param(self, value: Any, path: Path_, name: str) -> Any:
        if name == "hours":
            if (
                isinstance(value, list)
                and len(value) == 2
                and all(isinstance(h, int) and not isinstance(h, bool) for h in value)
            ):
                return tuple(value)
            self.fail(path, f"must be two UTC hours like [1, 5], got {value!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"must be a number, got {value!r}")
        return float(value)

    def anomaly_settings(self, data: Any, path: Path_) -> tuple:
        """A group's random anomalies: rate, kinds and durations, each as on the command line
        (`kinds = "spike,dip=2"` or a table `{spike = 1, dip = 2}`)."""
        if data is None:
            return None, None, None
        data = self.table(data, path)
        self.known(data, path, ("rate", "kinds", "durations"))
        rate = None
        if "rate" in data:
            rate = self.number(data, (*path, "rate"), 0.0, anomalies.MAX_RATE_PER_HOUR)
        kinds = durations = None
        for key in ("kinds", "durations"):
            if key not in data:
                continue
            value = data[key]
            if isinstance(value, dict):
                value = ",".join(f"{k}={v}" for k, v in value.items())
            if not isinstance(value, str):
                message = f"must be text like 'spike,dip=2' or a table, got {value!r}"
                self.fail((*path, key), message)
            try:
                if key == "kinds":
                    kinds = anomalies.parse_kinds(value)
                else:
                    durations = anomalies.parse_durations(value)
            except ValueError as exc:
                self.fail((*path, key), str(exc))
        return rate, kinds, durations

    # The timeline

    def incident(self, data: dict[str, Any], path: Path_, number: int) -> Incident:
        keys = ("name", "at", "root", "symptom", *_ANOMALY_KEYS)
        self.known(data, path, keys)
        root_id = self.text(data, (*path, "root"))
        if root_id not in self.index:
            self.fail((*path, "root"), f"no device {root_id!r} in the fleet; {self.fleet_hint()}")
        at = self.moment(data, (*path, "at"))
        root = self.anomaly(data, path, self.index[root_id], 0, None)
        symptoms: list[Anomaly] = []
        for i, item in enumerate(self.array(data, "symptom", path)):
            spath = (*path, "symptom", i)
            item = self.table(item, spath)
            self.known(item, spath, ("devices", "group", "delay", "stagger", *_ANOMALY_KEYS))
            devices = self.devices(item, spath)
            delay = self.duration(item, (*spath, "delay"), default=30_000, zero=True)
            stagger = self.duration(item, (*spath, "stagger"), default=0, zero=True)
            if len(symptoms) + len(devices) > MAX_SYMPTOMS:
                self.fail(spath, f"an incident has at most {MAX_SYMPTOMS:,} symptoms")
            for k, device in enumerate(devices):
                symptoms.append(self.anomaly(item, spath, device, delay + k * stagger, root))
        name = self.text(data, (*path, "name"), default=f"incident {number}")
        return Incident(number, name, at, root, tuple(symptoms))

    def anomaly(
        self, data: dict[str, Any], path: Path_, device: int, delay_ms: int, root: Anomaly | None
    ) -> Anomaly:
        """The kind, metric, duration, size and direction of a root (root None) or symptom;
        a symptom's defaults are its root's."""
        kind = self.text(data, (*path, "kind"), default=root.kind if root else "incident")
        if kind not in anomalies.CATALOGUE:
            allowed = ", ".join(anomalies.SIMULATED_KINDS)
            self.fail((*path, "kind"), f"unknown anomaly kind {kind!r}; allowed: {allowed}")
        spec = anomalies.CATALOGUE[kind]
        allowed_metrics = [METRICS[m] for m in spec.metrics]
        metric = self.text(data, (*path, "metric"), default="")
        if spec.together:
            if metric and metric not in allowed_metrics:
                self.fail((*path, "metric"), f"{kind} alters all of {', '.join(allowed_metrics)}")
            mask = sum(1 << m for m in spec.metrics)
        else:
            if not metric and root is not None and root.kind == kind:
                mask = root.metrics
            else:
                metric = metric or allowed_metrics[0]
                if metric not in allowed_metrics:
                    self.fail(
                        (*path, "metric"),
                        f"{kind} alters one of {', '.join(allowed_metrics)}, not {metric!r}",
                    )
                mask = 1 << METRICS.index(metric)
        default_duration = root.duration_ms if root else round(spec.max_s * 1000)
        duration = self.duration(data, (*path, "duration"), default=default_duration)
        size = self.number(data, (*path, "size"), 0.0, 1.0, default=root.size if root else 0.8)
        direction = self.text(data, (*path, "direction"), default="")
        if direction not in ("", "up", "down"):
            self.fail((*path, "direction"), f"must be up or down, got {direction!r}")
        sign = root.sign if root else 1.0
        if direction:
            sign = 1.0 if direction == "up" else -1.0
        return Anomaly(device, kind, mask, delay_ms, duration, size, sign)

    def planned(self, data: dict[str, Any], path: Path_, kind: str) -> Planned:
        extra = {"maintenance": ("mode",), "load_test": ("factor",)}.get(kind, ())
        self.known(data, path, ("at", "devices", "group", "every", "duration", *extra))
        at = self.moment(data, (*path, "at"))
        devices = self.devices(data, path)
        every = self.duration(data, (*path, "every"), default=0, zero=True)
        default = 120_000 if kind == "deploy" else None
        duration = self.duration(data, (*path, "duration"), default=default)
        mode = self.text(data, (*path, "mode"), default="down")
        if mode not in ("down", "quiet"):
            self.fail((*path, "mode"), f"must be down or quiet, got {mode!r}")
        factor = 1.0
        if kind == "load_test":
            factor = self.number(data, (*path, "factor"), 1.0, MAX_FACTOR, default=3.0)
            if factor <= 1.0:
                self.fail((*path, "factor"), f"must be above 1, got {factor:g}")
        return Planned(kind, at, tuple(devices), every, duration, mode == "quiet", factor)

    def devices(self, data: dict[str, Any], path: Path_) -> list[int]:
        """Global indices, in fleet order, of `devices` (ids or glob patterns, one or a list)
        and `group` (names, one or a list); at least one device."""
        if "devices" not in data and "group" not in data:
            self.fail(path, "say which devices: devices = ['web-01', 'db-*'] or group = 'web'")
        chosen: set[int] = set()
        for key in ("devices", "group"):
            if key not in data:
                continue
            value = data[key]
            items = [value] if isinstance(value, str) else value
            texts = isinstance(items, list) and all(isinstance(v, str) for v in items)
            if not texts or not items:
                self.fail((*path, key), f"must be text or a list of text, got {value!r}")
            for item in items:
                if key == "group":
                    if item not in self.groups:
                        allowed = ", ".join(self.groups)
                        self.fail((*path, key), f"no group {item!r}; groups: {allowed}")
                    chosen.update(self.groups[item])
                elif item in self.index:
                    chosen.add(self.index[item])
                else:
                    found = [i for d, i in self.index.items() if fnmatch.fnmatchcase(d, item)]
                    if not found:
                        self.fail((*path, key), f"{item!r} matches no device; {self.fleet_hint()}")
                    chosen.update(found)
        return sorted(chosen)

    def fleet_hint(self) -> str:
        names = list(self.index)
        shown = ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:5])}, ... {names[-1]}"
        return f"the fleet: {shown}"

    # Values

    def known(self, data: dict[str, Any], path: Path_, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                where = f" in {_dotted(path)}" if path else ""
                message = f"unknown key {key!r}{where}; allowed: {', '.join(allowed)}"
                self.fail((*path, key), message)

    def table(self, value: Any, path: Path_) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, got {value!r}")
        return value

    def array(self, data: dict[str, Any], key: str, path: Path_ = ()) -> list[Any]:
        value = data.get(key, [])
        if not isinstance(value, list):
            self.fail((*path, key), f"must be an array of tables ([[{key}]]), got {value!r}")
        return value

    def text(self, data: dict[str, Any], path: Path_, default: str | None = None) -> str:
        key = path[-1]
        if key not in data:
            if default is None:
                self.fail(path, "missing")
            return default
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(path, f"must be non-empty text, got {value!r}")
        return value

    def integer(self, data: dict[str, Any], path: Path_, low: int, high: int) -> int:
        key = path[-1]
        if key not in data:
            self.fail(path, "missing")
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(path, f"must be a whole number {low}..{high}, got {value!r}")
        return value

    def number(
        self, data: dict[str, Any], path: Path_, low: float, high: float, default: float = 0.0
    ) -> float:
        value = data.get(path[-1], default)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not low <= value <= high:
            self.fail(path, f"must be a number {low:g}..{high:g}, got {value!r}")
        return float(value)

    def duration(
        self, data: dict[str, Any], path: Path_, default: int | None = None, zero: bool = False
    ) -> int:
        """Milliseconds from a duration (common.durations: `90s`, `20m`, `1h30m`, `2d`, or a
        number of seconds)."""
        key = path[-1]
        if key not in data:
            if default is None:
                self.fail(path, "missing")
            return default
        value = data[key]
        ms = _duration_ms(value)
        low = "0" if zero else "above 0"
        if ms is None or (ms == 0 and not zero) or ms > MAX_EPISODE_MS:
            message = f"must be a duration like 90s, 20m or 1h30m, {low} to 7d, got {value!r}"
            self.fail(path, message)
        return ms

    def moment(self, data: dict[str, Any], path: Path_) -> Moment:
        """`2025-08-04T10:00:00Z` (or a TOML date-time), `+2h` or `day 2 10:00`."""
        if path[-1] not in data:
            self.fail(path, "missing")
        value = data[path[-1]]
        moment = _moment(value)
        if moment is None:
            self.fail(
                path,
                f"{value!r} is not a time like 2025-08-04T10:00:00Z, +2h30m or 'day 2 10:00'",
            )
        return moment


_ANOMALY_KEYS = ("kind", "metric", "duration", "size", "direction")
_EPISODES = ("incident", *EVENT_KINDS)


def _duration_ms(value: Any) -> int | None:
    try:
        return durations.milliseconds(value)
    except ValueError:
        return None


def _moment(value: Any) -> Moment | None:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return Moment(str(value), absolute_ms=round(moment.timestamp() * 1000))
    if isinstance(value, date):
        midnight = datetime.combine(value, time(), tzinfo=UTC)
        return Moment(str(value), absolute_ms=round(midnight.timestamp() * 1000))
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("+"):
        offset = _duration_ms(text[1:])
        return None if offset is None else Moment(text, offset_ms=offset)
    day = _DAY.fullmatch(text.lower())
    if day:
        number, hour, minute, second = (int(x) if x else 0 for x in day.groups())
        if number < 1 or hour > 23 or minute > 59 or second > 59:
            return None
        return Moment(text, offset_ms=((hour * 60 + minute) * 60 + second) * 1000, day=number)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _moment(moment)


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_HEADER = re.compile(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?")
_KEY = re.compile(r"\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


def _split(key: str) -> list[str]:
    """A dotted TOML key's parts, quotes removed (`a."b.c"` is a, b.c)."""
    return [p.strip().strip("\"'") for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', key)]


def _key_lines(text: str) -> dict[Path_, int]:
    """The line of each table header and key, by key path with array indices, so a problem
    found after parsing can name its line. Best effort: keys inside inline tables or
    multi-line values fall back to their table's line."""
    lines: dict[Path_, int] = {}
    arrays: dict[tuple[str, ...], int] = {}  # array of tables (by names) -> current index
    current: Path_ = ()

    def concrete(names: list[str]) -> Path_:
        path: list[str | int] = []
        for i, name in enumerate(names):
            path.append(name)
            if tuple(names[: i + 1]) in arrays:
                path.append(arrays[tuple(names[: i + 1])])
        return tuple(path)

    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.fullmatch(line)
        if header:
            names = _split(header[2])
            if header[1] == "[[":
                key = tuple(names)
                arrays[key] = arrays.get(key, -1) + 1
                for inner in [a for a in arrays if len(a) > len(key) and a[: len(key)] == key]:
                    del arrays[inner]
            current = concrete(names)
            lines.setdefault(current, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*current, *_split(key[1])), number)
    return lines
