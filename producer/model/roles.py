"""Device roles: what kind of machine a simulated device is, and how a fleet mixes them.

A role is a frozen table of parameters: cpu level and skew, daily cycle, memory pattern,
disk_io and net rates and the long episodes (batch runs, backups, traffic surges) that
make real host metrics bursty at every time scale. `dataclasses.replace` (or `override`,
with dotted names) derives a variant. A device's role is a pure function of (seed, device
index): a fleet repeats a pattern of roles in blocks, each block of len(pattern)
consecutive devices holding the pattern once in an order drawn from the seed, so every
block has the mix exactly and any subset of a fleet has the fleet's roles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from producer.model import noise

_ROLE = 90  # random stream of the role order within a block
MAX_EPISODE_S = 12 * 3600.0  # longest episode: bounds how far back an instant looks


@dataclass(frozen=True)
class Episodes:
    """Long episodes of one kind (batch runs, backups, surges): how often, how long, how strong.

    They start in the UTC hours [hours[0], hours[1]) (wrapping past midnight if the first
    is larger), `per_day` a day on average; a duration is Pareto(`alpha`) from `min_s`,
    capped at `max_s`, so most are short and a few last hours. At typical strength one
    adds `cpu` and `mem` points and multiplies disk_io by 1 + `disk` and net by 1 + `net`;
    each episode's strength is that times 3^u, u uniform in -1..1.
    """

    per_day: float = 0.0
    min_s: float = 300.0
    max_s: float = 3600.0
    alpha: float = 1.3
    hours: tuple[int, int] = (0, 24)
    cpu: float = 0.0
    mem: float = 0.0
    disk: float = 0.0
    net: float = 0.0

    def __post_init__(self) -> None:
        start, end = self.hours
        if not (0 <= start <= 23 and 1 <= end <= 24 and start != end):
            raise ValueError(
                f"hours must be two UTC hours like (1, 5) or (22, 4), got {self.hours}"
            )
        if not 0 <= self.per_day <= self.window_hours:
            raise ValueError(
                f"per_day must be within 0..{self.window_hours} (one per hour of its window), "
                f"got {self.per_day}"
            )
        if not 0 < self.min_s <= self.max_s <= MAX_EPISODE_S:
            raise ValueError(
                f"durations must satisfy 0 < min_s <= max_s <= {MAX_EPISODE_S:g}, "
                f"got {self.min_s:g}..{self.max_s:g}"
            )
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if min(self.cpu, self.mem, self.disk, self.net) < 0:
            raise ValueError("episode effects cpu, mem, disk and net must be >= 0")

    @property
    def window_hours(self) -> int:
        start, end = self.hours
        return (end - start) % 24 or 24

    def chance_by_hour(self) -> np.ndarray:
        """Probability that one starts in each UTC hour slot, (24,)."""
        start = self.hours[0]
        inside = (np.arange(24) - start) % 24 < self.window_hours
        return np.where(inside, self.per_day / self.window_hours, 0.0)


EPISODE_KINDS = ("jobs", "surges", "transfers", "backups")


@dataclass(frozen=True)
class Role:
    """What one kind of machine does; every device of a role varies around these values."""

    name: str
    summary: str
    cpu: float  # median cpu % outside episodes
    cpu_spread: float  # sd of log cpu from changes over minutes to days: its right skew
    cpu_noise: float  # per-sample jitter, points
    daily: float  # daily cycle amplitude, in log of load (0: none)
    peak_hour: float  # UTC hour of the daily peak (devices differ by up to 1.5 h)
    weekend: float  # log of load removed on Saturdays and Sundays
    mem: float  # mem % level
    mem_swing: float  # amplitude of the slow mem drift (hours), points
    gc_growth: float  # points mem grows between collections (0: no sawtooth)
    disk: float  # disk_io MB/s at median load
    net: float  # net KB/s at median load
    io_follow: float  # how steeply disk_io and net follow the load (exponent of load)
    jobs: Episodes = field(default_factory=Episodes)  # batch runs, builds, cron jobs
    surges: Episodes = field(default_factory=Episodes)  # traffic surges, query storms
    transfers: Episodes = field(default_factory=Episodes)  # copies, log shipping, snapshots
    backups: Episodes = field(default_factory=Episodes)  # nightly backups

    def __post_init__(self) -> None:
        if not 0 < self.cpu <= 100:
            raise ValueError(f"cpu must be within 0..100 (exclusive of 0), got {self.cpu}")
        if not 0 <= self.mem <= 100:
            raise ValueError(f"mem must be within 0..100, got {self.mem}")
        if not 0 <= self.peak_hour < 24:
            raise ValueError(f"peak_hour must be within 0..24, got {self.peak_hour}")
        if self.disk <= 0 or self.net <= 0:
            raise ValueError(f"disk and net must be > 0, got {self.disk} and {self.net}")
        for name in ("cpu_spread", "cpu_noise", "daily", "weekend", "mem_swing", "gc_growth"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.io_follow <= 4:
            raise ValueError(f"io_follow must be within 0..4, got {self.io_follow}")


def _role(name: str, summary: str, **values: Any) -> Role:
    return Role(name=name, summary=summary, **values)


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        _role(
            "idle",
            "dev boxes, bastions, spares: near-idle, rare builds and copies",
            cpu=2.5,
            cpu_spread=0.45,
            cpu_noise=0.3,
            daily=0.25,
            peak_hour=14.0,
            weekend=0.3,
            mem=22.0,
            mem_swing=2.0,
            gc_growth=1.0,
            disk=0.6,
            net=5.0,
            io_follow=1.0,
            jobs=Episodes(
                per_day=1.5,
                min_s=300,
                max_s=3 * 3600,
                alpha=1.3,
                hours=(8, 20),
                cpu=20,
                mem=8,
                disk=5,
                net=3,
            ),
            transfers=Episodes(
                per_day=3, min_s=600, max_s=4 * 3600, alpha=1.2, cpu=3, disk=8, net=15
            ),
            backups=Episodes(
                per_day=0.8,
                min_s=600,
                max_s=2 * 3600,
                alpha=1.5,
                hours=(1, 5),
                cpu=4,
                disk=10,
                net=20,
            ),
        ),
        _role(
            "web",
            "web front ends: daily cycle, weekend dip, traffic surges, log shipping",
            cpu=22.0,
            cpu_spread=0.22,
            cpu_noise=1.5,
            daily=0.5,
            peak_hour=15.0,
            weekend=0.35,
            mem=55.0,
            mem_swing=5.0,
            gc_growth=6.0,
            disk=4.0,
            net=350.0,
            io_follow=1.3,
            surges=Episodes(
                per_day=3,
                min_s=300,
                max_s=4 * 3600,
                alpha=1.3,
                hours=(7, 23),
                cpu=15,
                mem=3,
                disk=1,
                net=6,
            ),
            transfers=Episodes(
                per_day=4, min_s=120, max_s=2 * 3600, alpha=1.3, cpu=4, disk=15, net=1.5
            ),
        ),
        _role(
            "batch",
            "batch workers: mostly waiting, then jobs of minutes to hours at full cpu",
            cpu=6.0,
            cpu_spread=0.3,
            cpu_noise=1.0,
            daily=0.2,
            peak_hour=3.0,
            weekend=0.0,
            mem=30.0,
            mem_swing=3.0,
            gc_growth=2.0,
            disk=3.0,
            net=40.0,
            io_follow=1.0,
            jobs=Episodes(
                per_day=5, min_s=600, max_s=6 * 3600, alpha=1.2, cpu=45, mem=25, disk=4, net=4
            ),
            transfers=Episodes(
                per_day=2, min_s=300, max_s=3 * 3600, alpha=1.2, cpu=5, disk=10, net=8
            ),
        ),
        _role(
            "db",
            "databases: steady memory, daily cycle, nightly backups, compactions",
            cpu=18.0,
            cpu_spread=0.2,
            cpu_noise=1.0,
            daily=0.65,
            peak_hour=14.0,
            weekend=0.3,
            mem=78.0,
            mem_swing=1.5,
            gc_growth=0.0,
            disk=20.0,
            net=250.0,
            io_follow=1.0,
            surges=Episodes(
                per_day=2,
                min_s=300,
                max_s=2 * 3600,
                alpha=1.4,
                hours=(7, 23),
                cpu=12,
                disk=2,
                net=2,
            ),
            transfers=Episodes(
                per_day=2, min_s=300, max_s=2 * 3600, alpha=1.3, cpu=8, disk=8, net=2
            ),
            backups=Episodes(
                per_day=1,
                min_s=1800,
                max_s=4 * 3600,
                alpha=1.5,
                hours=(1, 4),
                cpu=12,
                disk=12,
                net=25,
            ),
        ),
        _role(
            "cache",
            "caches (memcached, redis): full memory, heavy net, hot-key storms, snapshots",
            cpu=8.0,
            cpu_spread=0.2,
            cpu_noise=0.6,
            daily=0.5,
            peak_hour=15.0,
            weekend=0.35,
            mem=85.0,
            mem_swing=1.0,
            gc_growth=0.0,
            disk=0.4,
            net=900.0,
            io_follow=1.3,
            surges=Episodes(
                per_day=3,
                min_s=300,
                max_s=3 * 3600,
                alpha=1.3,
                hours=(7, 23),
                cpu=8,
                disk=0,
                net=6,
            ),
            transfers=Episodes(
                per_day=4, min_s=120, max_s=1800, alpha=1.5, cpu=6, disk=30, net=0.5
            ),
        ),
    )
}

DEFAULT_PATTERN = ("web", "web", "web", "db", "db", "cache", "batch", "batch", "idle", "idle")


@dataclass(frozen=True)
class RoleMix:
    """Which role each device of a fleet has: `pattern` repeated in blocks, shuffled per block.

    `table` names the roles the pattern may use (ROLES, or variants of them).
    """

    pattern: tuple[str, ...] = DEFAULT_PATTERN
    table: Mapping[str, Role] = field(default_factory=lambda: ROLES)

    def __post_init__(self) -> None:
        if not self.pattern:
            raise ValueError("a role mix needs at least one role")
        unknown = [name for name in self.pattern if name not in self.table]
        if unknown:
            raise ValueError(f"unknown role {unknown[0]!r}; allowed: {', '.join(self.table)}")

    @classmethod
    def parse(cls, text: str) -> RoleMix:
        """`mix` (the default), one role (`web`), or counts per block (`web=3,db=1,cache=1`)."""
        text = text.strip().lower()
        if text in ("", "mix", "default"):
            return cls()
        pattern: list[str] = []
        for part in text.split(","):
            name, _, count = part.strip().partition("=")
            name = name.strip()
            if name not in ROLES:
                raise ValueError(f"unknown role {name!r}; allowed: mix, {', '.join(ROLES)}")
            try:
                n = int(count) if count.strip() else 1
            except ValueError:
                n = -1
            if not 1 <= n <= 100:
                raise ValueError(f"role count must be a whole number 1..100, got {part.strip()!r}")
            pattern += [name] * n
        if len(pattern) > 1000:
            raise ValueError(f"a role mix holds at most 1000 devices per block, got {len(pattern)}")
        return cls(tuple(pattern))

    def __str__(self) -> str:
        counts = {name: self.pattern.count(name) for name in dict.fromkeys(self.pattern)}
        return ",".join(f"{name}={n}" for name, n in counts.items())

    def names(self, seed: int, devices: np.ndarray) -> list[str]:
        """The role name of each of these global device indices."""
        indices = np.asarray(devices, np.int64)
        size = len(self.pattern)
        if size == 1 or not len(indices):
            return [self.pattern[0]] * len(indices)
        blocks, inverse = np.unique(indices // size, return_inverse=True)
        keys = noise.uniform(seed, _ROLE, blocks[:, None], np.arange(size)[None, :])
        order = np.argsort(keys, axis=1, kind="stable")
        picks = order[inverse, indices % size]
        return [self.pattern[int(i)] for i in picks]

    def roles(self, seed: int, devices: np.ndarray) -> list[Role]:
        """The Role of each of these global device indices."""
        return [self.table[name] for name in self.names(seed, devices)]


DEFAULT_MIX = RoleMix()


def override(role: Role, changes: Mapping[str, Any]) -> Role:
    """A variant of `role`: keys are field names, or `episodes.field` (e.g. `jobs.per_day`)."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        outer, _, inner = key.partition(".")
        allowed = [f.name for f in dataclasses.fields(Role) if f.name not in ("name", "summary")]
        if outer not in allowed or (inner and outer not in EPISODE_KINDS):
            raise ValueError(f"unknown role parameter {key!r}; allowed: {', '.join(allowed)}")
        if inner:
            names = [f.name for f in dataclasses.fields(Episodes)]
            if inner not in names:
                raise ValueError(
                    f"unknown episode parameter {key!r}; allowed: {outer}.{', '.join(names)}"
                )
            nested.setdefault(outer, {})[inner] = value
        else:
            top[key] = value
    for outer, values in nested.items():
        top[outer] = dataclasses.replace(top.get(outer, getattr(role, outer)), **values)
    return dataclasses.replace(role, **top)


def distinct(roles: Sequence[Role]) -> tuple[list[Role], np.ndarray]:
    """The distinct roles of a fleet (by identity) and each device's position among them, so
    that per-device parameters are looked up once per role, not once per device."""
    position: dict[int, int] = {}
    unique: list[Role] = []
    which = np.empty(len(roles), np.int64)
    for i, role in enumerate(roles):
        k = position.setdefault(id(role), len(unique))
        if k == len(unique):
            unique.append(role)
        which[i] = k
    return unique, which


def columns(unique: Sequence[Role], which: np.ndarray, name: str) -> np.ndarray:
    """One role parameter of every device, as an array (from `distinct`)."""
    return np.array([getattr(r, name) for r in unique], np.float64)[which]


def describe(mix: RoleMix) -> str:
    """A text table of the roles, each with its share of the mix and its main parameters."""
    header = ("role", "share", "cpu %", "mem %", "disk_io MB/s", "net KB/s", "daily", "episodes")
    rows = [header]
    for role in mix.table.values():
        episodes = "; ".join(
            f"{kind} {spec.per_day:g}/day {_span(spec.min_s)}-{_span(spec.max_s)}"
            for kind in EPISODE_KINDS
            if (spec := getattr(role, kind)).per_day > 0
        )
        share = f"{mix.pattern.count(role.name)}/{len(mix.pattern)}"
        values = (role.cpu, role.mem, role.disk, role.net, role.daily)
        rows.append((role.name, share, *(f"{v:g}" for v in values), episodes or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    summaries = [f"{role.name}: {role.summary}" for role in mix.table.values()]
    return "\n".join([*lines, "", *summaries, "", f"mix, every {len(mix.pattern)} devices: {mix}"])


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds / 60:g}m" if seconds >= 60 else f"{seconds:g}s"
