"""Scenario files: parsing and one-line errors, root and symptom labels, planned events, and
the same data live, backfilled and sharded."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.schema import ANOMALY_KINDS, CSV_HEADER, EVENT_KINDS
from common.shards import Shard
from common.windows import EVENT_ID_BASE, merge, to_nab
from conftest import REPO, Pipeline, wait_until
from producer.backfill import generate
from producer.model.anomalies import SIMULATED_KINDS, AnomalyPlan
from producer.model.roles import ROLES
from producer.model.scenario import ScenarioError, load, parse
from producer.model.timeline import ID_BASE, PER_INCIDENT
from producer.sources import series as series_store
from producer.sources.series import Series
from producer.sources.sim import SimSource

START = "2025-08-04T00:00:00"
START_MS = 1_754_265_600_000  # 2025-08-04 00:00:00 UTC, a Monday
ROOT_ID = ID_BASE + PER_INCIDENT  # the first incident's root
ENV = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}

FLEET = """
name = "test fleet"
[[group]]
role = "db"
count = 1
id = "db-{n:02d}"

[[group]]
role = "web"
count = 3
id = "web-{n:02d}"
"""

INCIDENT = """
[[incident]]
at = "+10m"
root = "db-01"
duration = "5m"

  [[incident.symptom]]
  group = "web"
  kind = "level_shift"
  metric = "cpu"
  delay = "30s"
  stagger = "15s"
  duration = "4m"
"""

EVENTS = """
[[maintenance]]
at = "+5m"
devices = "db-01"
duration = "3m"

[[maintenance]]
at = "+5m"
devices = "web-01"
duration = "3m"
mode = "quiet"

[[deploy]]
at = "day 1 00:12"
devices = ["web-02", "web-03"]
every = "1m"
duration = "2m"

[[load_test]]
at = "+20m"
group = "web"
duration = "5m"
factor = 4
"""


def source(
    text: str, anomaly_rate: float = 0.0, devices=None, seed: int = 5, rate: float = 1.0
) -> SimSource:
    scenario = parse(text)
    series = Series(seed, len(scenario.devices), rate, START_MS, START_MS, 0)
    return SimSource(series, anomaly_rate, SIMULATED_KINDS, devices=devices, scenario=scenario)


def by_device(rows: np.ndarray, name: str) -> np.ndarray:
    return rows[rows["device"] == name.encode()]


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows whose values differ (a value going missing counts)."""
    va = np.stack([a[m] for m in ("cpu", "mem", "disk_io", "net")], axis=1)
    vb = np.stack([b[m] for m in ("cpu", "mem", "disk_io", "net")], axis=1)
    return ((va != vb) & ~(np.isnan(va) & np.isnan(vb))).any(axis=1)


class TestParsing:
    def test_a_scenario_parses_into_its_fleet_and_timeline(self):
        """Groups make the devices (ids from the pattern, in order) with their roles and
        overrides; incidents resolve symptoms with delay and stagger; planned events name
        their devices in fleet order."""
        text = (
            FLEET
            + """
[group.params]
cpu = 30
surges.per_day = 5
[group.anomalies]
rate = 4
kinds = {spike = 3, dip = 1}
"""
            + INCIDENT
            + EVENTS
        )
        scenario = parse(text, "x.toml")
        assert scenario.name == "test fleet"
        assert scenario.devices == ["db-01", "web-01", "web-02", "web-03"]
        web = scenario.groups[1]
        assert web.role.cpu == 30 and web.role.surges.per_day == 5 and web.role.name == "web"
        assert ROLES["web"].cpu == 22  # the table itself is untouched
        assert web.anomaly_rate == 4 and web.anomaly_kinds == {"spike": 3.0, "dip": 1.0}
        assert scenario.groups[0].anomaly_rate is None  # the command line's
        (incident,) = scenario.incidents
        assert incident.root.device == 0 and incident.root.kind == "incident"
        assert incident.root.duration_ms == 300_000
        assert [s.device for s in incident.symptoms] == [1, 2, 3]
        assert [s.delay_ms for s in incident.symptoms] == [30_000, 45_000, 60_000]
        assert {s.kind for s in incident.symptoms} == {"level_shift"}
        assert incident.at.resolve(START_MS) == START_MS + 600_000
        kinds = [(p.kind, p.devices) for p in scenario.planned]
        assert kinds == [
            ("maintenance", (0,)),
            ("maintenance", (1,)),
            ("deploy", (2, 3)),
            ("load_test", (1, 2, 3)),
        ]
        deploy = scenario.planned[2]
        assert deploy.at.resolve(START_MS + 3_600_000) == START_MS + 12 * 60_000  # day 1 00:12
        assert scenario.planned[1].quiet and not scenario.planned[0].quiet

    def test_times_absolute_relative_and_by_day(self):
        """`at` takes a TOML date-time, ISO text, `+1h30m` and `day 2 10:00`."""
        base = FLEET + '[[deploy]]\ngroup = "web"\nat = AT\n'
        origin = START_MS + 5 * 3_600_000  # 05:00 on day 1
        cases = {
            "2025-08-05T10:00:00Z": START_MS + 34 * 3_600_000,
            '"2025-08-05 10:00"': START_MS + 34 * 3_600_000,
            '"+1h30m"': origin + 90 * 60_000,
            '"day 2 10:00"': START_MS + 34 * 3_600_000,
            '"day 1"': START_MS,
        }
        for value, expected in cases.items():
            (deploy,) = parse(base.replace("AT", value)).planned
            assert deploy.at.resolve(origin) == expected, value

    @pytest.mark.parametrize(
        ("text", "line", "message"),
        [
            ("name = 'x'\n[[group]\n", 2, "not valid TOML"),
            ("name = 'x'\n", 1, "group: a scenario needs a fleet"),
            (
                FLEET.replace('role = "web"', 'role = "dbx"'),
                9,
                "group[1].role: unknown role 'dbx'; allowed: idle, web, batch, db, cache",
            ),
            (FLEET + "colour = 'red'\n", 12, "group[1].colour: unknown key 'colour' in group[1]"),
            (FLEET.replace("count = 3", "count = 0"), 10, "group[1].count: must be a whole"),
            (FLEET.replace('"web-{n:02d}"', '"db-{n:02d}"'), 11, "'db-01' is used twice"),
            (FLEET.replace('"web-{n:02d}"', '" web-{n}"'), 11, "starts or ends with a space"),
            (FLEET.replace('"web-{n:02d}"', '"web-{m}"'), 11, "group[1].id: 'web-{m}' is not"),
            (FLEET + "[group.params]\ncpu = 150\n", 13, "group[1].params.cpu: cpu must be"),
            (
                FLEET + "[group.params.surges]\nper_dayy = 2\n",
                13,
                "group[1].params.surges.per_dayy: unknown episode parameter",
            ),
            (FLEET + "[group.anomalies]\nkinds = 'spik'\n", 13, "unknown anomaly kind 'spik'"),
            (
                FLEET + INCIDENT.replace('root = "db-01"', 'root = "db-09"'),
                15,
                "incident[0].root: no device 'db-09' in the fleet; the fleet: db-01, web-01",
            ),
            (
                FLEET + INCIDENT.replace('group = "web"', 'devices = "wbe-*"'),
                19,
                "incident[0].symptom[0].devices: 'wbe-*' matches no device",
            ),
            (
                FLEET + INCIDENT.replace('metric = "cpu"', 'metric = "temp"'),
                21,
                "incident[0].symptom[0].metric: level_shift alters one of cpu, mem, disk_io, net",
            ),
            (FLEET + INCIDENT.replace('"+10m"', '"tomorrow"'), 14, "incident[0].at: 'tomorrow'"),
            (FLEET + INCIDENT.replace('"4m"', '"4 minutes"'), 24, "symptom[0].duration: must be"),
            (FLEET + EVENTS.replace('"quiet"', '"off"'), 22, "maintenance[1].mode: must be down"),
            (FLEET + EVENTS.replace("factor = 4", "factor = 1"), 34, "factor: must be above 1"),
            (FLEET + EVENTS.replace('group = "web"', 'group = "front"'), 32, "no group 'front'"),
            (FLEET + "[[deploy]]\nat = '+1h'\n", 12, "deploy[0]: say which devices"),
        ],
    )
    def test_bad_files_get_one_line_naming_the_line_and_key(self, text, line, message):
        """Each problem is refused with one line: the file, the line, the key and what is
        allowed."""
        with pytest.raises(ScenarioError) as error:
            parse(text, "scenarios/x.toml")
        text = str(error.value)
        assert "\n" not in text
        assert text.startswith(f"scenarios/x.toml line {line}: "), text
        assert message in text, text

    def test_the_command_line_refuses_a_bad_file_and_a_conflicting_fleet(self, tmp_path):
        """generate with a bad scenario exits 2 with the one line; --devices or STREAM_ROLES
        beside --scenario is refused, naming both."""
        bad = tmp_path / "bad.toml"
        bad.write_text(FLEET.replace('role = "web"', 'role = "dbx"'))
        good = tmp_path / "good.toml"
        good.write_text(FLEET)
        base = [sys.executable, "-m", "producer", "generate", "--duration", "1m"]
        for args, env, expected in (
            (["--scenario", str(bad)], {}, f"{bad} line 9: group[1].role: unknown role 'dbx'"),
            (["--scenario", str(good), "--devices", "3"], {}, "--devices conflicts with"),
            (["--scenario", str(good)], {"STREAM_ROLES": "db"}, "STREAM_ROLES conflicts with"),
            ([], {"STREAM_SCENARIO": str(tmp_path / "none.toml")}, "cannot read scenario"),
            (["--source", "live", "--scenario", str(good)], {}, "--scenario needs the sim"),
        ):
            command = (
                base[:3] if args[:1] == ["--source"] else [*base, "--out", str(tmp_path / "x.csv")]
            )
            result = subprocess.run(
                [*command, *args],
                env={**ENV, **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 2, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("producer: error: "), lines
            assert expected in lines[0], lines[0]

    def test_the_scenario_command_lists_the_fleet_and_the_episodes_with_their_ids(self):
        """`producer scenario FILE --start` prints each group and every episode in time order,
        with the anomaly ids the samples will carry."""
        result = subprocess.run(
            [sys.executable, "-m", "producer", "scenario", "scenarios/db-outage.toml"]
            + ["--start", START],
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert "  web: 4 x web, web-01 .. web-04" in lines
        episodes = [line for line in lines if line.startswith("  2025-")]
        assert episodes[0] == (
            "  2025-08-04 01:00:00  incident 1 (primary database stalls): root db-01 incident "
            f"for 20m, anomaly_id {ROOT_ID}"
        )
        assert episodes[1].endswith(f"symptom web-01 level_shift for 19m, anomaly_id {ROOT_ID + 1}")
        assert episodes == sorted(episodes)

    def test_another_scenario_starts_a_new_series_and_older_state_files_continue(self, tmp_path):
        """A producer given another scenario starts a new series (the scenario's clock starts
        then) whose seqs follow the old ones; a state file from before scenarios continues."""
        state = tmp_path / "state.json"
        plain, _ = series_store.continue_or_start(state, 1, 4, 1.0, 5_000)
        data = json.loads(state.read_text())
        del data["scenario"]  # as written before scenarios existed
        state.write_text(json.dumps(data))
        again, continued = series_store.continue_or_start(state, 1, 4, 1.0, 9_000)
        assert continued and again == plain
        outage, continued = series_store.continue_or_start(state, 1, 4, 1.0, 9_000, scenario="x")
        assert not continued and outage.origin_ms == 9_000 and outage.seq_base > 0
        back, continued = series_store.continue_or_start(state, 1, 4, 1.0, 12_000, scenario="x")
        assert continued and back == outage


class TestIncidents:
    def test_root_and_symptoms_are_labelled_with_the_roots_id_after_their_delays(self):
        """The root's samples carry anomaly_root == anomaly_id; each symptom its own id, the
        root's id as anomaly_root, and starts after its delay; random anomalies keep their own
        id as root and never run inside a scheduled one."""
        src = source(FLEET + INCIDENT, anomaly_rate=60.0)
        rows = src.batch(0, 1799)  # 30 min at 1 Hz
        rows = rows.rows
        root = by_device(rows, "db-01")
        mine = root[root["anomaly_id"] == ROOT_ID]
        assert len(mine) > 250
        assert (mine["anomaly_root"] == ROOT_ID).all()
        assert mine["anomaly"][0] == ANOMALY_KINDS.index("incident") + 1
        start = START_MS + 600_000
        assert (
            start <= mine["ts_ms"].min() < start + 5_000 and mine["ts_ms"].max() < start + 300_000
        )
        for k, name in enumerate(("web-01", "web-02", "web-03")):
            rows_k = by_device(rows, name)
            symptom = rows_k[rows_k["anomaly_id"] == ROOT_ID + k + 1]
            begin = start + 30_000 + 15_000 * k
            assert begin <= symptom["ts_ms"].min() < begin + 5_000, name
            assert symptom["ts_ms"].max() < begin + 240_000
            assert (symptom["anomaly_root"] == ROOT_ID).all()
            assert (symptom["anomaly"] == ANOMALY_KINDS.index("level_shift") + 1).all()
            inside = rows_k[(rows_k["ts_ms"] >= begin) & (rows_k["ts_ms"] < begin + 240_000)]
            assert not ((inside["anomaly_id"] > 0) & (inside["anomaly_id"] < ID_BASE)).any()
        inside = root[(root["ts_ms"] >= start) & (root["ts_ms"] < start + 300_000)]
        assert not ((inside["anomaly_id"] > 0) & (inside["anomaly_id"] < ID_BASE)).any()
        random = rows[(rows["anomaly_id"] > 0) & (rows["anomaly_id"] < ID_BASE)]
        assert len(random) and (random["anomaly_root"] == random["anomaly_id"]).all()
        # Without the scenario's incident, random anomalies would have run inside it.
        plan = AnomalyPlan(5, np.array([0]), 60.0, SIMULATED_KINDS)
        assert len(plan.events(start, start + 299_000))

    def test_labels_are_exact_against_the_same_fleet_without_the_incident(self):
        """A sample is labelled iff the scheduled anomaly changed one of its values."""
        with_incident = source(FLEET + INCIDENT).batch(0, 1799).rows
        without = source(FLEET).batch(0, 1799).rows
        differ = changed(with_incident, without)
        labelled = with_incident["anomaly_id"] > 0
        assert labelled.sum() > 1000
        assert (differ == labelled).all()
        assert (with_incident["anomaly_id"][labelled] >= ROOT_ID).all()

    def test_a_subset_of_the_fleet_has_the_fleets_rows(self):
        """A source owning some devices (a shard) makes exactly the whole fleet's rows for
        them, scheduled anomalies, roots and events included."""
        text = FLEET + INCIDENT + EVENTS
        full = source(text, anomaly_rate=30.0).batch(0, 1799).rows
        for subset in ([0, 2], [1, 3], [3]):
            part = source(text, anomaly_rate=30.0, devices=subset).batch(0, 1799).rows
            names = [("db-01", "web-01", "web-02", "web-03")[i].encode() for i in subset]
            expected = full[np.isin(full["device"], names)]
            assert part.tobytes() == expected.tobytes()


class TestEvents:
    def test_planned_events_are_labelled_as_events_not_anomalies(self):
        """Maintenance, deploys and load tests label exactly the samples in their span with
        `event`, never with an anomaly; outside them the values are untouched."""
        rows = source(FLEET + EVENTS).batch(0, 1799).rows
        plain = source(FLEET).batch(0, 1799).rows
        assert not rows["anomaly"].any() and not rows["anomaly_id"].any()
        minute = 60_000
        spans = {  # device -> (event, start, end)
            "db-01": [("maintenance", 5, 8)],
            "web-01": [("maintenance", 5, 8), ("load_test", 20, 25)],
            "web-02": [("deploy", 12, 14), ("load_test", 20, 25)],
            "web-03": [("deploy", 13, 15), ("load_test", 20, 25)],
        }
        for device, episodes in spans.items():
            mine, base = by_device(rows, device), by_device(plain, device)
            expected = np.zeros(len(mine), np.uint8)
            for event, start, end in episodes:
                inside = (mine["ts_ms"] >= START_MS + start * minute) & (
                    mine["ts_ms"] < START_MS + end * minute
                )
                expected[inside] = EVENT_KINDS.index(event) + 1
            assert (mine["event"] == expected).all(), device
            outside = expected == 0
            assert mine[outside].tobytes() == base[outside].tobytes()
        down = by_device(rows, "db-01")
        assert np.isnan(down["cpu"][down["event"] > 0]).all()
        quiet, base = by_device(rows, "web-01"), by_device(plain, "web-01")
        during = quiet["event"] == EVENT_KINDS.index("maintenance") + 1
        assert quiet["cpu"][during].mean() < 0.2 * base["cpu"][during].mean()
        loaded = quiet["event"] == EVENT_KINDS.index("load_test") + 1
        assert quiet["net"][loaded].mean() > 2.5 * base["net"][loaded].mean()
        deployed = by_device(rows, "web-02")
        first = deployed["event"] == EVENT_KINDS.index("deploy") + 1
        assert (
            deployed["mem"][first][:10].mean()
            < 0.6 * by_device(plain, "web-02")["mem"][first][:10].mean()
        )

    def test_random_anomalies_stop_for_maintenance_and_go_on_in_deploys(self):
        """No random anomaly runs in a maintenance window; planned events keep their label
        when one happens in a deploy or a load test."""
        text = FLEET + EVENTS.replace('"3m"', '"20m"')
        rows = source(text, anomaly_rate=60.0).batch(0, 3599).rows
        maintenance = rows["event"] == EVENT_KINDS.index("maintenance") + 1
        assert maintenance.sum() > 1800 and not rows["anomaly_id"][maintenance].any()
        loaded = rows["event"] == EVENT_KINDS.index("load_test") + 1
        assert rows["anomaly_id"][loaded].any()

    def test_windows_file_groups_symptoms_under_their_root_and_lists_events(self, tmp_path):
        """The backfill's windows file has each symptom's root, and one row per planned
        event with its name, no root and an id of its own; NAB export leaves events out."""
        scenario = parse(FLEET + INCIDENT + EVENTS)
        out = tmp_path / "train.csv"
        series = Series(5, len(scenario.devices), 1.0, START_MS, START_MS, 0)
        generate(out, series, 1800, 0.0, SIMULATED_KINDS, workers=1, scenario=scenario)
        windows = pd.read_csv(tmp_path / "train.windows.csv", parse_dates=["start", "end"])
        anomalies = windows[~windows["kind"].isin(EVENT_KINDS)]
        assert sorted(set(anomalies["anomaly_id"])) == [ROOT_ID + j for j in range(4)]
        assert (anomalies["root"] == ROOT_ID).all()
        events = windows[windows["kind"].isin(EVENT_KINDS)]
        assert sorted(zip(events["device"], events["kind"], events["samples"], strict=True)) == [
            ("db-01", "maintenance", 180),
            ("web-01", "load_test", 300),
            ("web-01", "maintenance", 180),
            ("web-02", "deploy", 120),
            ("web-02", "load_test", 300),
            ("web-03", "deploy", 120),
            ("web-03", "load_test", 300),
        ]
        assert events["root"].isna().all() and (events["anomaly_id"] >= EVENT_ID_BASE).all()
        assert events["anomaly_id"].is_unique
        deploy = events[(events["device"] == "web-03") & (events["kind"] == "deploy")].iloc[0]
        assert deploy["start"] == pd.Timestamp("2025-08-04 00:13:00", tz="UTC")
        assert deploy["end"] == pd.Timestamp("2025-08-04 00:14:59", tz="UTC")
        merged = merge(tmp_path / "train.windows.csv")
        assert (merged.loc[merged["anomaly_id"] < EVENT_ID_BASE, "root"] == ROOT_ID).all()
        nab = json.loads(to_nab(tmp_path / "train.windows.csv", "train"))
        assert sum(len(w) for w in nab.values()) == 4  # the anomalies only


def test_every_shipped_scenario_loads_and_backfills(tmp_path):
    """Each file in scenarios/ loads and generates a short backfill without error."""
    files = sorted((REPO / "scenarios").glob("*.toml"))
    assert len(files) >= 3
    for path in files:
        scenario = load(path)
        out = tmp_path / f"{path.stem}.csv"
        result = subprocess.run(
            [sys.executable, "-m", "producer", "generate", "--scenario", str(path)]
            + ["--duration", "2h", "--start", START, "--seed", "1", "--out", str(out)]
            + ["--no-progress"],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        frame = pd.read_csv(out, usecols=["device"])
        assert sorted(frame["device"].unique()) == sorted(scenario.devices), path


SCENARIO_LIVE = """
name = "live check"
[[group]]
role = "db"
count = 1
id = "db-{n:02d}"

[[group]]
role = "web"
count = 3
id = "web-{n:02d}"

[[incident]]
at = "+2s"
root = "db-01"
duration = "6s"

  [[incident.symptom]]
  group = "web"
  kind = "level_shift"
  metric = "net"
  delay = "1s"
  stagger = "1s"
  duration = "3s"

[[deploy]]
at = "+1s"
devices = "web-02"
duration = "4s"

[[maintenance]]
at = "+4s"
devices = "web-03"
duration = "3s"

[[load_test]]
at = "+9s"
group = "web"
duration = "3s"
"""


def rows(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:] if path.exists() else []


def backfill(cwd: Path, out: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "producer", "generate", "--out", out, "--no-progress", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        check=True,
        timeout=120,
    )


@pytest.mark.slow
def test_live_producer_with_a_scenario_equals_generate(pipeline: Pipeline):
    """A live producer and logger with --scenario log the very rows, labels and windows that
    `generate` writes for the same scenario and span; `ctl status` names the scenario."""
    path = pipeline.cwd / "live.toml"
    path.write_text(SCENARIO_LIVE)
    args = ["--rate", "5", "--seed", "9", "--start", START, "--scenario", str(path)]
    # The 15 simulated seconds at three times real speed: the same ticks, 5 s of wall time.
    pipeline.producer(*args, "--anomaly-rate", "30", "--speed", "3")
    logger = pipeline.logger("--flush-interval", "0.1")
    log = pipeline.cwd / "data" / "stream_log.csv"
    wait_until(lambda: any(",web-01,75," in line for line in rows(log)), timeout=30)
    status = json.loads(pipeline.ctl("status").stdout)
    assert status["scenario"] == "live check"
    logger.stop()
    live = rows(log)
    assert log.read_text().startswith(CSV_HEADER + "\n")
    last_seq = max(int(line.split(",")[6]) for line in live)
    duration = f"{(last_seq + 1) / 5}s"
    backfill(pipeline.cwd, "backfill.csv", *args, "--anomaly-rate", "30", "--duration", duration)
    backfill_rows = rows(pipeline.cwd / "backfill.csv")
    assert len(backfill_rows) >= len(live) > 200
    by_key = {tuple(line.split(",")[5:7]): line for line in backfill_rows}
    for line in live:
        assert by_key[tuple(line.split(",")[5:7])] == line
    # The labels: anomaly_id, anomaly_root, event and the metrics the anomaly alters.
    labels = [line.split(",")[8:] for line in live]
    assert [str(ROOT_ID), str(ROOT_ID), "", "cpu|mem|disk_io|net"] in labels  # the root
    assert [str(ROOT_ID + 3), str(ROOT_ID), "", "net"] in labels  # a net symptom
    assert sum(label[2] == "deploy" for label in labels) == 20  # 4 s at 5 Hz
    # The windows that ended while logging are those of the backfill, event ids included.
    logged = rows(pipeline.cwd / "data" / "stream_log.windows.csv")
    backfilled = set(rows(pipeline.cwd / "backfill.windows.csv"))
    settled = [w for w in logged if int(w.split(",")[0]) >= ID_BASE]  # the scenario's
    assert len(settled) >= 9  # a root, 3 symptoms, a deploy, a maintenance, 3 load tests
    assert all(w in backfilled for w in settled), set(settled) - backfilled
    assert last_seq >= 75


@pytest.mark.slow
def test_two_sharded_producers_agree_with_one_backfill(pipeline: Pipeline):
    """Producers 1/2 and 2/2 with one scenario each simulate their own devices; together
    they log the backfill's rows, symptoms on one shard naming the root on the other."""
    path = pipeline.cwd / "live.toml"
    path.write_text(SCENARIO_LIVE)
    args = ["--rate", "5", "--seed", "4", "--start", START, "--scenario", str(path)]
    fast = ("--speed", "3")  # the same ticks, three times faster: 12 simulated s in 4 s
    first = pipeline.producer("--shard", "1/2", *args, *fast)
    second = pipeline.producer("--shard", "2/2", *args, *fast)
    logger = pipeline.logger("--producers", "2", "--flush-interval", "0.1")
    log = pipeline.cwd / "data" / "stream_log.csv"
    wait_until(lambda: any(",web-01,60," in line for line in rows(log)), timeout=30)
    wait_until(lambda: any(",db-01,60," in line for line in rows(log)), timeout=10)
    first.stop()
    second.stop()
    logger.stop()
    live = rows(log)
    assert Shard(1, 2).owns("db-01") and not Shard(1, 2).owns("web-01")
    # as many ticks as were logged (at 5 Hz): on a busy machine the stops come later
    seconds = max(int(line.split(",")[6]) for line in live) // 5 + 1
    backfill(pipeline.cwd, "single.csv", *args, "--duration", f"{seconds}s")
    single = {tuple(line.split(",")[5:7]): line for line in rows(pipeline.cwd / "single.csv")}
    for line in live:
        assert single[tuple(line.split(",")[5:7])] == line
    devices = {line.split(",")[5] for line in live}
    assert devices == {"db-01", "web-01", "web-02", "web-03"}
    assert any(f[5] == "web-01" and f[9] == str(ROOT_ID) for f in (x.split(",") for x in live))


def test_status_and_schema_name_the_scenario(pipeline: Pipeline):
    """/schema.json lists the event kinds and, with --scenario, the scenario's name for the
    dashboard legend."""
    path = pipeline.cwd / "s.toml"
    path.write_text(SCENARIO_LIVE)
    pipeline.producer("--scenario", str(path), "--rate", "2")
    pipeline.broadcaster("--scenario", str(path))
    url = pipeline.ws_url.replace("ws://", "http://") + "/schema.json"
    with urllib.request.urlopen(url, timeout=5) as response:
        document = json.loads(response.read())
    assert document["event_kinds"] == list(EVENT_KINDS)
    assert document["anomaly_kinds"] == list(ANOMALY_KINDS)
    assert document["scenario"] == "live check"
