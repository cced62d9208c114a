"""The series a producer publishes: its seed, tick grid and sequence numbers, kept on disk.

Tick k of a series happens at `origin + k / rate` and carries `seq = seq_base + k` for
every device. The series is saved when it starts, so a restarted producer with the same
seed, rate and device count continues it: the seq of a sample follows from its time, the
ticks it missed while down are never produced, and no seq is ever used twice. Changing
those settings starts a new series whose seqs begin after anything the old one published.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.errors import StartupError

log = logging.getLogger(__name__)

_VERSION = 1


@dataclass(frozen=True)
class Series:
    seed: int
    devices: int
    rate: float
    origin_ms: int
    seq_base: int

    def time_ms(self, ticks: np.ndarray) -> np.ndarray:
        """Timestamps of ticks on the absolute grid (no drift, however long it runs)."""
        return self.origin_ms + np.round(np.asarray(ticks) * (1000.0 / self.rate)).astype(np.int64)

    def tick_at_or_after(self, ms: float) -> int:
        k = max(0, math.ceil((ms - self.origin_ms) * self.rate / 1000.0) - 1)
        while int(self.time_ms(np.int64(k))) < ms:
            k += 1
        return k

    def last_tick_at_or_before(self, ms: float) -> int:
        return self.tick_at_or_after(ms + 1) - 1

    def continues(self, seed: int, devices: int, rate: float) -> bool:
        return (self.seed, self.devices, self.rate) == (seed, devices, rate)


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
        return Series(
            seed=int(data["seed"]),
            devices=int(data["devices"]),
            rate=float(data["rate"]),
            origin_ms=int(data["origin_ms"]),
            seq_base=int(data["seq_base"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
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


def resume_or_start(
    path: Path, seed: int | None, devices: int, rate: float, now_ms: float
) -> tuple[Series, bool]:
    """The series to publish, and whether it continues the saved one."""
    saved = load(path)
    if seed is None:
        seed = saved.seed if saved is not None else secrets.randbits(32)
    if saved is not None and saved.continues(seed, devices, rate):
        return saved, True
    seq_base = 0
    if saved is not None:
        # Past every seq the old series can have published, whatever its rate was.
        seq_base = saved.seq_base + saved.tick_at_or_after(now_ms) + 1
    origin_ms = math.ceil(now_ms / 1000.0) * 1000  # whole seconds: 1 Hz ticks on the second
    series = Series(seed=seed, devices=devices, rate=rate, origin_ms=origin_ms, seq_base=seq_base)
    save(path, series)
    return series, False
