"""The series a producer publishes: its tick grid and sequence numbers, kept on disk.

Tick k of a series is due (wall clock) at `wall_origin + k / (rate * speed)`, carries
the simulated timestamp `origin + k / rate`, and `seq = seq_base + k` for every device.
The series is saved when it starts, so a producer restarted with the same settings
continues it: the seq of a sample follows from its time, ticks missed while the producer
was down are never produced, and no seq is ever used twice. Other settings start a new
series whose seqs begin after anything the old one can have published. (Continuing a series
across a restart is not `ctl pause`/`ctl resume`, which stop and restart publishing within
one running series.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from common.errors import StartupError

log = logging.getLogger(__name__)

_VERSION = 2


@dataclass(frozen=True)
class Series:
    seed: int
    devices: int
    rate: float  # ticks per simulated second
    origin_ms: int  # simulated time of tick 0
    wall_origin_ms: int  # wall-clock time tick 0 was due
    seq_base: int
    speed: float = 1.0  # simulated seconds per wall second
    start_ms: int | None = None  # the requested simulated start, None for "now"
    source: str = "sim"
    scenario: str = ""  # the scenario's name: another scenario starts a new series (its clock)

    def time_ms(self, ticks: np.ndarray) -> np.ndarray:
        """Simulated timestamps of ticks, on an absolute grid (no drift however long it runs)."""
        return self.origin_ms + np.round(np.asarray(ticks) * (1000.0 / self.rate)).astype(np.int64)

    def due_ms(self, tick: int) -> float:
        """Wall-clock time a tick is due."""
        return self.wall_origin_ms + tick * 1000.0 / (self.rate * self.speed)

    def tick_due_at_or_after(self, wall_ms: float) -> int:
        k = max(0, math.ceil((wall_ms - self.wall_origin_ms) * self.rate * self.speed / 1000) - 1)
        while self.due_ms(k) < wall_ms:
            k += 1
        return k

    def last_tick_due_by(self, wall_ms: float) -> int:
        """The last tick due at or before `wall_ms` (-1 if none yet)."""
        k = math.floor((wall_ms - self.wall_origin_ms) * self.rate * self.speed / 1000)
        while self.due_ms(k + 1) <= wall_ms:
            k += 1
        while k >= 0 and self.due_ms(k) > wall_ms:
            k -= 1
        return max(k, -1)

    def identity(self) -> tuple:
        """What must match for a restarted producer to continue this series."""
        return (
            self.source,
            self.seed,
            self.devices,
            self.rate,
            self.speed,
            self.start_ms,
            self.scenario,
        )


def load(path: Path) -> Series | None:
    """The saved series, or None if there is none (or it is unreadable, with a warning)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable series state %s: %s", path, exc)
        return None
    if not isinstance(data, dict) or data.get("version") != _VERSION:
        log.warning("ignoring series state %s of an unknown version", path)
        return None
    try:
        # Fields added later have defaults, so older state files still continue their series.
        return Series(
            **{
                f.name: data[f.name] if f.default is MISSING else data.get(f.name, f.default)
                for f in fields(Series)
            }
        )
    except (KeyError, TypeError) as exc:
        log.warning("ignoring malformed series state %s: %s", path, exc)
        return None


def save(path: Path, series: Series) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a state file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": _VERSION, **asdict(series)}, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise StartupError(f"cannot write series state {path}: {exc.strerror or exc}") from None


def continue_or_start(
    path: Path,
    seed: int | None,
    devices: int,
    rate: float,
    now_ms: float,
    *,
    speed: float = 1.0,
    start_ms: int | None = None,
    source: str = "sim",
    fresh: bool = False,
    scenario: str = "",
) -> tuple[Series, bool]:
    """The series to publish, and whether it continues the saved one (never if `fresh`)."""
    saved = load(path)
    if seed is None:
        seed = saved.seed if saved is not None else secrets.randbits(32)
    wall_origin = math.ceil(now_ms / 1000.0) * 1000  # whole seconds: 1 Hz ticks on the second
    wanted = Series(
        seed=seed,
        devices=devices,
        rate=rate,
        origin_ms=wall_origin if start_ms is None else start_ms,
        wall_origin_ms=wall_origin,
        seq_base=0,
        speed=speed,
        start_ms=start_ms,
        source=source,
        scenario=scenario,
    )
    if not fresh and saved is not None and saved.identity() == wanted.identity():
        return saved, True
    if saved is not None:
        # Past every seq the old series can have published, whatever its rate was.
        seq_base = saved.seq_base + saved.tick_due_at_or_after(now_ms) + 1
        wanted = Series(**{**asdict(wanted), "seq_base": seq_base})
    save(path, wanted)
    return wanted, False


def identity(series: Series, replay_file: str | None = None, host: str | None = None) -> dict:
    """What a log tells series apart by: the source, and for a simulation its seed, fleet size
    and scenario (the rate, the start and a restart are the same series: its seqs go on);
    for a replay the file, for the live source the host. Every producer of a formation
    gives the same, so their samples belong in one log."""
    if series.source == "replay":
        return {"source": "replay", "file": replay_file or ""}
    if series.source == "live":
        return {"source": "live", "host": host or ""}
    return {
        "source": series.source,
        "seed": series.seed,
        "devices": series.devices,
        "scenario": series.scenario,
    }


def to_dict(series: Series) -> dict:
    """The series as JSON-ready fields (what the state file and `ctl` carry)."""
    return asdict(series)


def from_dict(data: dict) -> Series:
    """A series from `to_dict`'s fields; ValueError if they are not a series."""
    try:
        return Series(**{f.name: data[f.name] for f in fields(Series) if f.name in data})
    except TypeError as exc:
        raise ValueError(f"not a series: {exc}") from None


def adopt(path: Path, formation: Series, now_ms: float) -> tuple[Series, bool]:
    """Producer I > 1 of a formation publishes producer 1's series (`formation`): the same
    seed, time grid and seq numbering. Returns it (saved) and whether it continues the saved
    series. If this producer's saved series could have published seqs that the formation's
    would now repeat with other data (an earlier series of its own), its seqs are moved past
    them, with a warning: a seq is never used twice."""
    saved = load(path)
    if (
        saved is not None
        and saved.seq_base >= formation.seq_base
        and replace(saved, seq_base=formation.seq_base) == formation
    ):
        return saved, True  # the formation's series, or it moved past an earlier one of ours
    series = formation
    if saved is not None:
        used = saved.seq_base + saved.tick_due_at_or_after(now_ms) + 1
        first = formation.seq_base + formation.tick_due_at_or_after(now_ms)
        if first < used:
            log.warning(
                "this producer's earlier series used seqs up to %d: its seqs run %d above "
                "producer 1's, so that none is used twice",
                used - 1,
                used - first,
            )
            series = Series(**{**asdict(formation), "seq_base": formation.seq_base + used - first})
    save(path, series)
    return series, False


def rerate(path: Path, old: Series, next_tick: int, rate: float) -> Series:
    """A new series at another rate that starts where `old` would have published next.

    Its tick 0 is old's next tick (same simulated and wall time), so the schedule is
    re-anchored without a burst of catch-up samples and seq simply goes on. Saved, so a
    restart continues it.
    """
    series = Series(
        seed=old.seed,
        devices=old.devices,
        rate=rate,
        origin_ms=int(old.time_ms(np.int64(next_tick))),
        wall_origin_ms=round(old.due_ms(next_tick)),
        seq_base=old.seq_base + next_tick,
        speed=old.speed,
        start_ms=int(old.time_ms(np.int64(next_tick))),
        source=old.source,
        scenario=old.scenario,
    )
    save(path, series)
    return series
