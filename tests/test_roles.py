"""Device roles: the mix of a fleet, variants of a role, and where a user sees them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from producer.config import ProducerConfig
from producer.controller import Controller
from producer.model.roles import DEFAULT_MIX, ROLES, Episodes, RoleMix, override
from producer.model.workload import Model
from producer.sources.series import Series
from producer.sources.sim import SimSource

START_MS = 1_754_265_600_000  # Monday 2025-08-04 00:00 UTC


def test_every_block_of_devices_holds_the_pattern_once():
    """In a fleet of 1000, each block of ten consecutive devices has exactly the default mix,
    in an order that differs between blocks and between seeds."""
    names = DEFAULT_MIX.names(5, np.arange(1000))
    blocks = [tuple(names[i : i + 10]) for i in range(0, 1000, 10)]
    assert all(sorted(b) == sorted(DEFAULT_MIX.pattern) for b in blocks)
    assert len(set(blocks)) > 50
    assert DEFAULT_MIX.names(6, np.arange(1000)) != names


def test_a_devices_role_does_not_depend_on_the_others():
    """Any subset of indices, in any order, gets the fleet's roles for them."""
    fleet = DEFAULT_MIX.names(9, np.arange(40))
    subset = np.array([37, 2, 15, 16])
    assert DEFAULT_MIX.names(9, subset) == [fleet[i] for i in subset]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("mix", DEFAULT_MIX.pattern),
        ("", DEFAULT_MIX.pattern),
        ("db", ("db",)),
        ("web=2,cache", ("web", "web", "cache")),
        (" Web = 1 , DB = 2 ", ("web", "db", "db")),
    ],
)
def test_mixes_parse(text, pattern):
    """A mix is `mix`, one role, or counts per block."""
    assert RoleMix.parse(text).pattern == pattern


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mainframe", "unknown role 'mainframe'; allowed: mix, idle, web, batch, db, cache"),
        ("web=0", "role count must be a whole number 1..100, got 'web=0'"),
        ("web=two", "role count must be a whole number 1..100, got 'web=two'"),
        (
            "web=100,db=100,idle=100,batch=100,cache=100,web=100,db=100,idle=100,batch=100,"
            "cache=100,web=1",
            "a role mix holds at most 1000 devices per block, got 1001",
        ),
    ],
)
def test_bad_mixes_are_refused_with_one_line(text, message):
    """A bad mix is a ValueError naming the value and what is allowed."""
    with pytest.raises(ValueError) as error:
        RoleMix.parse(text)
    assert str(error.value) == message


def test_one_role_fleet_and_explicit_roles_per_device():
    """`--roles web` makes every device a web front end; Model also takes one Role per device,
    and a variant made with override changes what the device does."""
    assert set(RoleMix.parse("web").names(1, np.arange(7))) == {"web"}
    busy = override(ROLES["idle"], {"cpu": 40.0, "jobs.per_day": 0.0, "backups.hours": (2, 3)})
    assert busy.cpu == 40 and busy.jobs.per_day == 0 and busy.backups.hours == (2, 3)
    assert busy.backups.per_day == ROLES["idle"].backups.per_day  # the rest is kept
    ts = START_MS + np.arange(0, 86_400_000, 60_000)
    model = Model(3, 2, roles=[ROLES["idle"], busy])
    cpu = model.values(ts)[..., 0]
    assert [r.name for r in model.roles] == ["idle", "idle"]
    assert np.median(cpu[:, 1]) > 5 * np.median(cpu[:, 0])
    with pytest.raises(ValueError, match="one role per device: 1 for 2"):
        Model(3, 2, roles=[busy])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": 1}, "unknown role parameter 'colour'"),
        ({"jobs.colour": 1}, "unknown episode parameter 'jobs.colour'"),
        ({"cpu": 0}, "cpu must be within 0..100"),
        ({"jobs.per_day": 13.0}, "per_day must be within 0..12"),
        ({"surges.max_s": 50 * 3600}, "durations must satisfy 0 < min_s <= max_s <= 43200"),
        ({"backups.hours": (5, 5)}, "hours must be two UTC hours"),
    ],
)
def test_bad_role_parameters_are_refused(changes, message):
    """Overrides are checked like the table itself: unknown names and values out of range."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        override(ROLES["idle"], changes)


def test_episodes_start_only_in_their_hours():
    """An episode window of 1-4 UTC spreads per_day over those three hours only, also when it
    wraps past midnight."""
    chance = Episodes(per_day=1.5, hours=(1, 4)).chance_by_hour()
    assert chance.tolist() == [0.0, 0.5, 0.5, 0.5] + [0.0] * 20
    wrapped = Episodes(per_day=2, hours=(22, 2)).chance_by_hour()
    assert np.flatnonzero(wrapped).tolist() == [0, 1, 22, 23] and wrapped.sum() == 2


def test_role_table_is_frozen():
    """Roles are frozen: a variant is made with replace, never by changing the table."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        ROLES["web"].cpu = 1.0  # type: ignore[misc]
    assert dataclasses.replace(ROLES["web"], cpu=30.0).cpu == 30.0 and ROLES["web"].cpu == 22.0


def test_ctl_status_names_each_devices_role():
    """`ctl status` answers the role of every device the producer simulates."""
    source = SimSource(Series(8, 12, 1.0, START_MS, START_MS, 0), 0.0, (), devices=[1, 4, 11])
    status = Controller(ProducerConfig(), source).handle({"cmd": "status"})
    expected = DEFAULT_MIX.names(8, np.array([1, 4, 11]))
    assert status["roles"] == dict(zip(["host-02", "host-05", "host-12"], expected, strict=True))


def test_roles_command_lists_roles_and_devices():
    """`python -m producer roles --seed S --devices N` prints the role table, the mix and each
    device's role; a bad --roles is one line and exit status 2."""
    run = subprocess.run(
        [sys.executable, "-m", "producer", "roles", "--seed", "42", "--devices", "12"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    for name in ROLES:
        assert any(line.startswith(name + " ") for line in run.stdout.splitlines())
    expected = DEFAULT_MIX.names(42, np.arange(12))
    assert f"host-12  {expected[11]}" in run.stdout
    assert "mix, every 10 devices: web=3,db=2,cache=1,batch=2,idle=2" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "producer", "roles", "--roles", "gpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "producer: error: Invalid value for '--roles' (env var: 'STREAM_ROLES'): unknown role "
        "'gpu'; allowed: mix, idle, web, batch, db, cache"
    ]


@pytest.mark.parametrize(("roles", "low", "high"), [("cache", 75, 95), ("idle", 10, 35)])
def test_generate_takes_roles_from_the_environment(tmp_path, roles, low, high):
    """STREAM_ROLES reaches the backfill's workers: a cache fleet's memory sits near 85 %, an
    idle one's near 22 %."""
    subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--duration", "1h", "--devices", "3"]
        + ["--seed", "1", "--anomaly-rate", "0", "--out", "roles.csv", "--no-progress"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "STREAM_ROLES": roles},
        check=True,
        capture_output=True,
        timeout=120,
    )
    mem = pd.read_csv(tmp_path / "roles.csv").groupby("device")["mem"].median()
    assert len(mem) == 3 and mem.between(low, high).all(), mem.to_dict()


def test_a_source_takes_one_role_per_device_of_the_fleet():
    """SimSource takes explicit roles for the whole fleet; a subset source gives its devices
    the same roles and rows as the full one."""
    series = Series(4, 4, 1.0, START_MS, START_MS, 0)
    fleet = [ROLES["db"], ROLES["idle"], override(ROLES["web"], {"cpu": 60.0}), ROLES["cache"]]
    full = SimSource(series, 0.0, (), roles=fleet)
    part = SimSource(series, 0.0, (), devices=[2, 3], roles=fleet)
    assert full.role_names == ["db", "idle", "web", "cache"] and part.role_names == ["web", "cache"]
    rows = full.batch(0, 599).rows
    assert (
        part.batch(0, 599).rows.tobytes()
        == rows[np.isin(rows["device"], [b"host-03", b"host-04"])].tobytes()
    )
    assert np.median(rows["cpu"][rows["device"] == b"host-03"]) > 30
    with pytest.raises(ValueError, match="one role per device: 2 for 4"):
        SimSource(series, 0.0, (), roles=fleet[:2])
