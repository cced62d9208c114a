"""Scaling out: which instance of a scaled process handles which devices, and where it listens.

Devices fall into GROUPS groups. Shard I of N (1-based) of producers or loggers handles
the groups g with g % N == I - 1: every device belongs to exactly one shard, the same one on
every host. A subscriber that wants some devices only subscribes to their groups (topic
`group.<g>`), a logger shard to its shard (`shard.<n>.<i>`), and receives nothing else.

Simulated devices (`host-01`, `host-02`, ...) are dealt out round-robin, so a fleet splits
evenly; any other id goes to the group of its CRC-32.

Under honcho (`honcho start -c producer=2`), an instance learns its index from
`HONCHO_PROCESS_NAME` (`producer.2`) and the count from honcho's own command line; without
honcho both come from a setting (`--shard 2/3`).
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import schema
from common.layout import Layout

GROUPS = 16
_SIM_NAME = re.compile(rb"host-0*([1-9][0-9]*)")
# Each instance's endpoints are the first one's, with the tcp port this much higher per
# instance (producer.2 on 5566, 5567, 5568 beside producer.1's 5556, 5557, 5558).
PORT_STRIDE = 10


def device_group(device: bytes | str) -> int:
    """The group of one device id."""
    name = device.encode() if isinstance(device, str) else device.rstrip(b"\0")
    match = _SIM_NAME.fullmatch(name)
    if match:
        return (int(match[1]) - 1) % GROUPS
    return zlib.crc32(name) % GROUPS


class GroupIndex:
    """The group of every row of a batch, cheaply: a cache per device, and per tick layout.

    The producer's batches are tick-major grids (the same devices in the same order every
    tick); their groups are the first tick's, tiled, and the rows of each group are cached
    per grid shape, so a split costs one comparison and one take per group.
    """

    def __init__(self) -> None:
        self._groups: dict[bytes, int] = {}
        self._layout = Layout()
        self._layout_groups = np.zeros(0, np.int64)
        self._split: dict[int, list[tuple[int, np.ndarray]]] = {}  # ticks -> [(group, rows)]
        self._shard_rows: dict[tuple[int, int, int], np.ndarray] = {}

    def groups(self, devices: np.ndarray) -> np.ndarray:
        """The group of each device in an array of device ids."""
        names, inverse = np.unique(devices, return_inverse=True)
        known = self._groups
        per_name = np.array(
            [known.setdefault(n, device_group(n)) for n in names.tolist()], np.int64
        )
        return per_name[inverse]

    def split(
        self, batch: schema.Batch, wanted: set[int] | None = None
    ) -> list[tuple[int, schema.Batch]]:
        """(group, rows of that group) for each group present (and in `wanted`, if given),
        rows in their original order."""
        rows = batch.rows
        if not len(rows):
            return []
        ticks = self._grid_ticks(rows["device"])
        if ticks is None:
            row_groups = self.groups(rows["device"])
            present = np.unique(row_groups)
            if wanted is not None:
                present = [g for g in present.tolist() if g in wanted]
            if len(present) == 1 and len(row_groups) and (row_groups == present[0]).all():
                return [(int(present[0]), batch)]
            return [(int(g), batch.with_rows(rows[row_groups == g])) for g in present]
        parts = self._split.get(ticks)
        if parts is None:
            row_groups = np.tile(self._layout_groups, ticks)
            parts = [(int(g), np.flatnonzero(row_groups == g)) for g in np.unique(row_groups)]
            if len(self._split) > 64:
                self._split.clear()
            self._split[ticks] = parts
        if len(parts) == 1:
            return [(parts[0][0], batch)] if wanted is None or parts[0][0] in wanted else []
        return [
            (g, batch.with_rows(rows[index])) for g, index in parts if wanted is None or g in wanted
        ]

    def shard_part(self, batch: schema.Batch, shard: Shard) -> schema.Batch:
        """The rows of `shard`'s devices, in their original order."""
        rows = batch.rows
        if not len(rows):
            return batch
        ticks = self._grid_ticks(rows["device"])
        if ticks is None:
            keep = self.groups(rows["device"]) % shard.count == shard.index - 1
            return batch if keep.all() else batch.with_rows(rows[keep])
        key = (shard.count, shard.index, ticks)
        index = self._shard_rows.get(key)
        if index is None:
            mine = np.tile(self._layout_groups % shard.count == shard.index - 1, ticks)
            index = np.flatnonzero(mine)
            if len(self._shard_rows) > 256:
                self._shard_rows.clear()
            self._shard_rows[key] = index
        if len(index) == len(rows):
            return batch
        return batch.with_rows(rows[index])

    def _grid_ticks(self, devices: np.ndarray) -> int | None:
        """How many ticks the batch holds, if it is a grid of the remembered layout (one
        comparison of 64-bit words; see common.layout), or of a new one, then remembered."""
        ticks = self._layout.ticks(devices)
        if ticks is not None:
            return ticks
        layout = Layout.of(devices)
        if layout is None:
            return None
        self._layout = layout
        self._layout_groups = self.groups(layout.devices)
        self._split.clear()
        self._shard_rows.clear()
        return len(devices) // len(layout)


@dataclass(frozen=True)
class Shard:
    """Instance `index` (1-based) of `count`: it handles the groups g, g % count == index - 1."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= GROUPS:
            raise ValueError(f"a shard count must be 1..{GROUPS}, got {self.count}")
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: the index must be 1..{self.count}")

    @property
    def groups(self) -> list[int]:
        return [g for g in range(GROUPS) if g % self.count == self.index - 1]

    def owns(self, device: bytes | str) -> bool:
        return device_group(device) % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ALL = Shard()


def parse_shard(text: str) -> Shard | None:
    """`I/N` as a Shard, `auto` (or empty) as None; ValueError naming what is allowed."""
    text = text.strip().lower()
    if text in ("", "auto"):
        return None
    match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if not match:
        raise ValueError(f"{text!r} is not a shard like 2/3 (instance 2 of 3) or auto")
    return Shard(int(match[1]), int(match[2]))


def instance_index(process: str) -> int:
    """N of honcho's `process.N`; 1 when not run by honcho (or as another process type)."""
    name = os.environ.get("HONCHO_PROCESS_NAME", "")
    match = re.fullmatch(re.escape(process) + r"\.(\d+)", name)
    return int(match[1]) if match else 1


def honcho_concurrency(process: str) -> int | None:
    """How many `process` instances the honcho that started us runs (`-c producer=2`).

    Read from the parent's command line (`honcho start -c producer=2,logger=3`); None when
    the parent is not honcho. Types not named there run once."""
    if "HONCHO_PROCESS_NAME" not in os.environ:
        return None
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    if "start" not in argv:
        return None
    spec = ""
    for i, arg in enumerate(argv):
        if arg in ("-c", "--concurrency") and i + 1 < len(argv):
            spec = argv[i + 1]
        elif arg.startswith("--concurrency="):
            spec = arg.split("=", 1)[1]
        elif arg.startswith("-c") and len(arg) > 2:
            spec = arg[2:]
    counts = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    try:
        return int(counts.get(process, 1))
    except ValueError:
        return None


def resolve(setting: str, process: str) -> Shard:
    """The shard of this instance: the setting if explicit, else from honcho, else 1/1."""
    explicit = parse_shard(setting)
    if explicit is not None:
        return explicit
    count = honcho_concurrency(process) or 1
    return Shard(min(instance_index(process), count), count)


def instance_endpoint(endpoint: str, index: int) -> str:
    """The endpoint instance `index` uses when the first uses `endpoint`.

    tcp ports go up by PORT_STRIDE per instance (a `*` port stays: the kernel chooses);
    ipc and inproc names get `-N` before their extension."""
    if index == 1:
        return endpoint
    if endpoint.startswith("tcp://"):
        head, _, port = endpoint.rpartition(":")
        if port == "*":
            return endpoint
        return f"{head}:{int(port) + PORT_STRIDE * (index - 1)}"
    scheme, _, path = endpoint.partition("://")
    stem, dot, ext = path.rpartition(".")
    if dot and "/" not in ext:
        return f"{scheme}://{stem}-{index}.{ext}"
    return f"{scheme}://{path}-{index}"


def endpoints(setting: str, count: int) -> list[str]:
    """The endpoints of all `count` instances: a comma list as given (one per instance), or
    one endpoint expanded per instance with `instance_endpoint`."""
    given = [e.strip() for e in setting.split(",") if e.strip()]
    if len(given) == 1 and count > 1:
        return [instance_endpoint(given[0], i) for i in range(1, count + 1)]
    return given


def own_endpoint(setting: str, shard: Shard) -> str:
    """The endpoint this instance binds: its entry of a comma list, or the one endpoint
    given, moved along for instances after the first (`instance_endpoint`)."""
    given = [e.strip() for e in setting.split(",") if e.strip()]
    if len(given) == 1:
        return instance_endpoint(given[0], shard.index)
    if shard.index > len(given):
        raise ValueError(
            f"instance {shard.index} has no endpoint in {setting!r} ({len(given)} given)"
        )
    return given[shard.index - 1]


def instance_path(path: Path, index: int) -> Path:
    """A file of instance `index`: the path itself for the first, `name-N.ext` after it."""
    return path if index == 1 else path.with_name(f"{path.stem}-{index}{path.suffix}")
