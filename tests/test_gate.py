"""The producer's gate: what is not a valid sample is never published, but withheld and
counted; the simulation and the live source never produce one."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from common import schema
from producer.catchup.history import History
from producer.gate import Gate
from producer.model import anomalies
from producer.sources.live import host_device_name
from producer.sources.series import Series
from producer.sources.sim import SimSource

START_MS = 1_754_265_600_000  # 2025-08-04 00:00:00 UTC


def batch_of(cpu: list[float], devices: list[bytes]) -> schema.Batch:
    rows = schema.empty_rows(len(cpu))
    rows["ts_ms"] = START_MS
    rows["seq"] = np.arange(len(cpu)) + 10
    rows["device"] = devices
    rows["cpu"] = cpu
    return schema.Batch(rows)


class TestGate:
    def test_invalid_samples_are_withheld_counted_and_logged_once_per_kind(self, caplog):
        """Of a batch with a cpu of 150 % and an id holding a tab, only the valid samples pass;
        the bad cpu's seq is withheld as invalid_input (the bad id cannot be: it is counted
        only), and each kind of problem is logged once however often it comes."""
        history = History(60, 1 << 20)
        gate = Gate(history)
        devices = [b"host-01", b"host-01", b"a\tb", b"host-02"]
        with caplog.at_level(logging.ERROR, logger="producer.gate"):
            for tick in range(3):
                batch = batch_of([5.0, 150.0, 5.0, 7.0], devices)
                batch.rows["seq"] += 4 * tick
                passed = gate.admit(batch)
                assert passed.rows["seq"].tolist() == [10 + 4 * tick, 13 + 4 * tick]
                schema.validate(passed.rows)
        assert gate.refused == 6
        withheld = [(s, s, "invalid_input") for s in (11, 15, 19)]
        assert history.end().withheld == {"host-01": withheld}
        logged = [r.getMessage() for r in caplog.records]
        assert len(logged) == 2
        assert "device id 'a\\tb' holds a control or format character" in logged[0]
        assert "cpu 150 is outside its domain [0, 100]" in logged[1]

    def test_a_valid_batch_passes_as_it_is(self):
        """A batch of valid samples is published unchanged (the same object, nothing copied)."""
        gate = Gate(History(60, 1 << 20))
        batch = batch_of([1.0, 2.0], [b"host-01", b"host-02"])
        assert gate.admit(batch) is batch and gate.refused == 0

    def test_a_vouched_block_passes_in_parts_and_an_invalid_one_is_still_checked(self):
        """Batches cut from a block the gate vouched for pass unchecked (the same objects);
        a block holding a bad value is not vouched for, so the batch holding it is checked
        and the bad sample withheld; batches from elsewhere are always checked."""
        history = History(60, 1 << 20)
        gate = Gate(history)
        block = batch_of([1.0] * 8, [b"host-01", b"host-02"] * 4).rows
        block["seq"] = np.repeat(np.arange(4), 2) + 10
        gate.vouch(block)
        parts = [schema.Batch(block[i : i + 2]) for i in range(0, 8, 2)]
        assert all(gate.admit(p) is p for p in parts)
        bad = block.copy()
        bad["cpu"][5] = 150.0
        gate.vouch(bad)
        passed = [gate.admit(schema.Batch(bad[i : i + 2])) for i in range(0, 8, 2)]
        assert [len(p) for p in passed] == [2, 2, 1, 2] and gate.refused == 1
        assert history.end().withheld == {"host-02": [(12, 12, "invalid_input")]}
        gate.vouch(block)
        elsewhere = batch_of([150.0], [b"host-03"])
        assert len(gate.admit(elsewhere)) == 0 and gate.refused == 2

    def test_rows_a_source_refused_are_withheld_under_their_seq(self):
        """A replay row refused with a valid device id is withheld under its seq (neighbours
        merge into one range); one without a valid id is only counted."""
        history = History(60, 1 << 20)
        gate = Gate(history)
        for device, seq in [("a", 4), ("a", 5), (None, None), ("b", 9)]:
            gate.refuse(device, seq)
        assert gate.refused == 4
        assert history.end().withheld == {
            "a": [(4, 5, "invalid_input")],
            "b": [(9, 9, "invalid_input")],
        }


class TestSourcesAreValid:
    @pytest.mark.parametrize("rate, hours", [(1.0, 48), (50.0, 0.25)])
    def test_the_simulation_with_every_kind_of_anomaly_is_always_valid(self, rate, hours):
        """Two days at 1 Hz and a quarter of an hour at 50 Hz of 8 devices, with anomalies of
        every kind at the highest rate, hold no sample the gate would refuse."""
        series = Series(
            seed=11,
            devices=8,
            rate=rate,
            origin_ms=START_MS,
            wall_origin_ms=START_MS,
            seq_base=0,
        )
        source = SimSource(series, anomalies.MAX_RATE_PER_HOUR, anomalies.SIMULATED_KINDS)
        ticks = int(hours * 3600 * rate)
        labelled = 0
        for first in range(0, ticks, 20_000):
            rows = source.batch(first, min(ticks, first + 20_000) - 1).rows
            assert not schema.invalid_rows(rows).any(), schema.problems(rows)[0][2]
            labelled += int((rows["anomaly"] > 0).sum())
        assert labelled > ticks * 8 * 0.05  # the anomalies were there to be checked

    def test_the_host_name_is_kept_when_it_is_a_valid_id(self):
        """The live source names its device after the host: as it is when that is a valid id,
        else with control characters replaced, edge spaces dropped and cut to 64 bytes."""
        assert host_device_name("web-1.example.com") == "web-1.example.com"
        assert host_device_name("rack 4, node") == "rack 4, node"
        assert host_device_name(" bad\tname ") == "bad-name"
        assert host_device_name("é" * 40) == "é" * 32
        assert host_device_name("") == "localhost"
        for name in ["web-1", "rack 4, node", " bad\tname ", "é" * 40, "", "\n"]:
            assert schema.device_problem(host_device_name(name)) is None

    def test_a_live_sample_is_valid(self):
        """One sample of this machine's metrics passes the gate."""
        from producer.sources.live import LiveSource

        now = int(time.time() * 1000)
        series = Series(seed=0, devices=1, rate=10, origin_ms=now, wall_origin_ms=now, seq_base=0)
        source = LiveSource(series)
        time.sleep(0.1)
        [batch] = source.take(now + 100)
        schema.validate(batch.rows)
