"""Runtime control of a running producer: what each control command does (the endpoint
and the `ctl` client that carry the commands are in producer.control)."""

from __future__ import annotations

import os
import time
from itertools import count
from typing import Any

import numpy as np

from common.bounds import number_in
from common.control import ControlError
from common.schema import ANOMALY_KINDS, METRICS, device_problem
from producer.config import ProducerConfig
from producer.model import anomalies
from producer.sources import Source
from producer.sources import series as series_store

_INJECTED_ID_BASE = 1 << 52  # above every random id, below 2**53 (exact in JavaScript)
_INJECTED_IDS_PER_SHARD = 1 << 44  # each producer of several counts in a range of its own


class Controller:
    """Carries out control requests on the running source; reports status."""

    def __init__(self, config: ProducerConfig, source: Source) -> None:
        self.config = config
        self.source = source
        self.paused = False
        self.published = 0
        self.last_seq = -1
        self._ids = count(
            _INJECTED_ID_BASE + (config.shard.index - 1) * _INJECTED_IDS_PER_SHARD + 1
        )

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request["cmd"]
        if command == "status":
            return self.status()
        if command == "pause":
            self.paused = True
            return {"paused": True}
        if command == "resume":
            if self.paused:
                self.paused = False
                self.source.take(time.time() * 1000)  # skip the ticks due while paused
            return {"paused": False}
        if command == "series":
            return self._series()
        from producer.sources import IdleSource

        if isinstance(self.source, IdleSource) and command == "rate":
            return {"rate": _number(request.get("rate"), "rate", 0.0, 1000.0), "idle": True}
        sim = self._sim()
        if command == "inject":
            return self._inject(sim, request)
        return self._rate(sim, request)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "source": self.config.source,
            "paused": self.paused,
            "published": self.published,
            "last_seq": self.last_seq,
            "shard": str(self.config.shard),
            # Which pipeline this is: `ctl` shows it, so a user who reached another
            # pipeline's producer (a default port) sees where that one runs.
            "pid": os.getpid(),
            "cwd": os.getcwd(),
            "state": str(self.config.state),
        }
        names = getattr(self.source, "device_names", None)
        if names is not None:
            status["owned_devices"] = list(names)
        roles = getattr(self.source, "role_names", None)
        if roles is not None:
            status["roles"] = dict(zip(names, roles, strict=True))
        scenario = getattr(self.source, "scenario", None)
        if scenario is not None:
            status["scenario"] = scenario.name
        series = getattr(self.source, "series", None)
        if series is not None:
            status.update(rate=series.rate, devices=series.devices, seed=series.seed)
        fleet = getattr(self.source, "fleet", None)
        if fleet is not None:  # groups, possible anomaly kinds, planned events, speed
            status.update(fleet())
        return status

    def _series(self) -> dict[str, Any]:
        """The series this producer publishes, for producers 2..N of its formation."""
        series = getattr(self.source, "series", None)
        if self.config.source != "sim" or series is None:
            raise ControlError(
                f"this producer publishes the {self.config.source} source, not a simulated series"
            )
        return {"series": series_store.to_dict(series)}

    def _sim(self):
        from producer.sources.sim import SimSource

        if not isinstance(self.source, SimSource):
            raise ControlError(f"only the sim source takes this command, not {self.config.source}")
        return self.source

    def _inject(self, sim, request: dict[str, Any]) -> dict[str, Any]:
        kind = request.get("kind")
        if kind not in anomalies.CATALOGUE:
            raise ControlError(
                f"unknown kind {kind!r}; allowed: {', '.join(anomalies.SIMULATED_KINDS)}"
            )
        spec = anomalies.CATALOGUE[kind]
        device = request.get("device", sim.device_names[0])
        if not isinstance(device, str):
            raise ControlError(f"device must be a device id (text), got {device!r}")
        problem = device_problem(device)
        if problem:
            raise ControlError(problem)
        if device not in sim.device_names:
            shard = self.config.shard
            raise ControlError(
                f"unknown device {device!r}; this producer ({shard}) simulates "
                f"{_listed(sim.device_names)}"
            )
        metric = request.get("metric")
        allowed = [METRICS[m] for m in spec.metrics]
        if spec.together:
            metrics = spec.metrics
            if metric not in (None, *allowed):
                raise ControlError(f"{kind} alters all of {', '.join(allowed)}")
        else:
            metric = metric or allowed[0]
            if metric not in allowed:
                raise ControlError(f"{kind} alters one of {', '.join(allowed)}, not {metric!r}")
            metrics = (METRICS.index(metric),)
        duration = _number(request.get("duration_s", spec.max_s), "duration_s", 0.001, 86_400)
        size = _number(request.get("size", 0.8), "size", 0.0, 1.0)
        series = sim.series
        start = int(series.time_ms(np.int64(sim.next_tick)))
        event = np.zeros(1, anomalies.EVENT)
        event["device"] = sim.device_indices[sim.device_names.index(device)]  # global index
        event["start"] = start
        event["length"] = round(duration * 1000)
        event["end"] = start + event["length"]
        event["kind"] = ANOMALY_KINDS.index(kind) + 1
        event["metrics"] = sum(1 << m for m in metrics)
        event["id"] = next(self._ids)
        event["size"] = size
        event["sign"] = 1.0
        sim.inject(event)
        return {
            "anomaly_id": int(event["id"][0]),
            "kind": kind,
            "device": device,
            "metrics": [METRICS[m] for m in metrics],
            "start_ms": start,
            "end_ms": int(event["end"][0]),
        }

    def _rate(self, sim, request: dict[str, Any]) -> dict[str, Any]:
        rate = _number(request.get("rate"), "rate", 0.0, 1000.0)
        if rate <= 0:
            raise ControlError(f"rate must be > 0 and <= 1000, got {request.get('rate')!r}")
        if sim.change is not None:
            raise ControlError(
                f"a rate change is due at seq {sim.change[1].seq_base}; try again after it"
            )
        old = sim.series
        tick = sim.next_tick
        if request.get("at_ms") is not None:  # the tick every producer of a formation takes
            at_ms = _number(request["at_ms"], "at_ms", 0.0, 2.0**53)
            tick = max(tick, old.tick_due_at_or_after(at_ms))
        series = series_store.rerate(self.config.state, old, tick, rate)
        sim.change_at(tick, series)
        return {"rate": rate, "from_seq": series.seq_base}


def _number(value: Any, name: str, low: float, high: float) -> float:
    return number_in(value, name, low, high, ControlError)


def _listed(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{', '.join(names[:5])}, ... {names[-1]}"
