"""What the producers say of the fleet, for the dashboard (`/fleet.json`) and Prometheus.

Samples do not carry a device's role or scenario group, which anomaly kinds a stream can
hold, or when a scenario's maintenance, deploys and load tests are planned: the producers
know, and say so in their control `status`. The broadcaster asks every producer now and
then (each a second until all have answered, then every `refresh` seconds) and serves the
union. A producer that does not answer (not started yet, a source without a fleet) leaves
its part out; the dashboard works without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from common import control, schema
from common.bus import PLAIN, Security

log = logging.getLogger(__name__)

RETRY_S = 1.0
REFRESH_S = 30.0
TIMEOUT_S = 1.0


class FleetInfo:
    """The union of the producers' answers: devices (role, group), possible anomaly and
    event kinds, planned events, rate and speed."""

    def __init__(
        self,
        endpoints: list[str],
        security: Security = PLAIN,
        refresh: float = REFRESH_S,
        scenario: str | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.security = security
        self.refresh = refresh
        self.scenario = scenario  # the broadcaster's --scenario name, until a producer says
        self.answered = 0
        self.roles: dict[str, tuple[str, str]] = {}  # device -> (role, group)
        self._body = self._document([])

    @property
    def body(self) -> bytes:
        """/fleet.json."""
        return self._body

    def describe(self, device: str) -> tuple[str, str] | None:
        return self.roles.get(device)

    async def run(self, stop: asyncio.Event) -> None:
        """Ask until `stop`: every RETRY_S until every producer answered, then every
        `refresh` seconds (a rate changed by ctl, a producer restarted)."""
        if not self.endpoints:
            return
        while not stop.is_set():
            replies = await asyncio.to_thread(
                control.ask_all, self.endpoints, {"cmd": "status"}, TIMEOUT_S, self.security
            )
            answers = [r for r in replies if r.get("ok")]
            if len(answers) != self.answered:
                log.info("fleet: %d of %d producer(s) answered", len(answers), len(replies))
            self.answered = len(answers)
            self._body = self._document(answers)
            wait = self.refresh if len(answers) == len(self.endpoints) else RETRY_S
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                pass

    def _document(self, answers: list[dict[str, Any]]) -> bytes:
        devices: dict[str, dict[str, str | None]] = {}
        anomaly: set[str] = set()
        events: set[str] = set()
        injectable: set[str] = set()
        planned: list[dict[str, Any]] = []
        rates, speeds, scenario = set(), set(), self.scenario
        for answer in answers:
            roles = answer.get("roles") or {}
            groups = answer.get("groups") or {}
            for device in answer.get("owned_devices") or roles:
                role = roles.get(device)
                devices[device] = {"role": role, "group": groups.get(device, role)}
            anomaly.update(answer.get("anomaly_kinds") or ())
            events.update(answer.get("event_kinds") or ())
            injectable.update(answer.get("injectable_kinds") or ())
            planned.extend(answer.get("planned") or ())
            if answer.get("rate") is not None:
                rates.add(answer["rate"])
            if answer.get("speed") is not None:
                speeds.add(answer["speed"])
            scenario = answer.get("scenario") or scenario
        self.roles = {
            d: (str(i["role"]), str(i["group"] or "")) for d, i in devices.items() if i["role"]
        }
        planned.sort(key=lambda e: (e["start_ms"], e["device"]))
        document = {
            "producers": len(self.endpoints),
            "answered": len(answers),
            "asked_at_ms": int(time.time() * 1000),
            "scenario": scenario,
            "devices": devices,
            # in wire order, so that colours and legends keep their order
            "anomaly_kinds": [k for k in schema.ANOMALY_KINDS if k in anomaly],
            "injectable_kinds": [k for k in schema.ANOMALY_KINDS if k in injectable],
            "event_kinds": [k for k in schema.EVENT_KINDS if k in events],
            "planned": planned,
            "rate": max(rates) if rates else None,
            "speed": max(speeds) if speeds else None,
        }
        return json.dumps(document, separators=(",", ":")).encode()
