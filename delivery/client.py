"""The one client of the producers' history: asks every producer's catch-up endpoint at
once (delivery.protocol) and gathers what they sent and what they know."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from common import schema
from common.bus import PLAIN, Dealer, Security
from delivery import protocol
from delivery.reasons import Reason, known


@dataclass(frozen=True)
class Facts:
    """What the producers that answered say about seqs they do not send, per device."""

    run_first: dict[str, int]  # first seq of the owning producer's current run
    skipped: dict[str, list[tuple[int, int]]]  # seq ranges its producer skipped (paused, behind)
    series_first: dict[str, int] = field(default_factory=dict)  # first seq of its series
    withheld: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    given_up: dict[str, tuple[int, int]] = field(default_factory=dict)  # held, over a limit
    series: list[dict] = field(default_factory=list)  # what the producers say they publish

    @classmethod
    def of(cls, ends: list[protocol.End]) -> Facts:
        """The facts of some answers' ends (a device belongs to the producer that names it)."""
        facts = cls({}, {})
        for end in ends:
            facts.run_first.update(end.run_first)
            facts.withheld.update(end.withheld)
            facts.given_up.update(end.given_up)
            if end.series is not None and end.series not in facts.series:
                facts.series.append(end.series)
            for device in {*end.run_first, *end.oldest}:
                facts.skipped[device] = end.skipped
                if end.series_first is not None:
                    facts.series_first[device] = end.series_first
        return facts

    @property
    def known(self) -> set[str]:
        """The devices some producer that answered has a series of."""
        return set(self.skipped)

    def withheld_reason(self, device: str, first: int, last: int) -> Reason | str | None:
        """The producer's own reason if it withheld all of `first`..`last` (invalid_input)."""
        for low, high, why in self.withheld.get(device, []):
            if low <= first and last <= high:
                return known(why)
        return None

    def reason(self, device: str, first: int, last: int) -> Reason | str:
        """Why the producers do not send seqs `first`..`last` they were asked for: withheld,
        skipped on purpose (not_produced), or else no longer held."""
        withheld = self.withheld_reason(device, first, last)
        if withheld is not None:
            return withheld
        ranges = self.skipped.get(device, [])
        if any(low <= first and last <= high for low, high in ranges):
            return Reason.NOT_PRODUCED
        return Reason.NOT_HELD


@dataclass(frozen=True)
class Answer:
    """What the producers sent for one request."""

    batches: list[schema.Batch]
    ends: list[protocol.End]
    asked: int  # producers asked
    answered: int  # producers that answered in time

    @property
    def facts(self) -> Facts | None:
        """What the producers that answered know; None if none did."""
        return Facts.of(self.ends) if self.answered else None


class CatchupClient:
    """Asks every producer's catch-up endpoint (a DEALER each), one request at a time."""

    def __init__(
        self, endpoints: str | list[str], security: Security = PLAIN, idle_timeout: float = 2.0
    ) -> None:
        self.endpoints = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
        self.security = security
        self.idle_timeout = idle_timeout  # silence after which a producer's answer is given up
        self._dealers = [Dealer(e, security) for e in self.endpoints]  # connected on first use
        self._lock = asyncio.Lock()  # a dealer carries one request at a time
        self.requests = 0
        self.series: list[dict] = []  # the series the producers named in their last answer

    async def ask(
        self,
        after: dict[str, int],
        after_ts_ms: int,
        after_seq: int | None = None,
        limit: int | None = None,
        wanted: Callable[[], bool] = lambda: True,
    ) -> Answer:
        """Everything held after `after` (see delivery.protocol for the other arguments);
        nothing, and no producer asked, if no longer `wanted` once its turn comes."""
        request = protocol.encode_request(after, after_ts_ms, after_seq, limit)
        async with self._lock:
            if not wanted():
                return Answer([], [], asked=0, answered=0)
            self.requests += 1
            answers = await asyncio.gather(
                *(protocol.ask(d, request, self.idle_timeout) for d in self._dealers)
            )
        batches: list[schema.Batch] = []
        ends: list[protocol.End] = []
        for answer in answers:
            if answer is not None:
                batches += answer[0]
                ends.append(answer[1])
        answer = Answer(batches, ends, asked=len(answers), answered=len(ends))
        named = [end.series for end in ends if end.series is not None]
        if named:
            self.series = [s for i, s in enumerate(named) if s not in named[:i]]
        return answer

    async def fetch(
        self, after: dict[str, int], after_ts_ms: int
    ) -> tuple[list[schema.Batch], Facts] | None:
        """(batches, what the producers know of their gaps), or None if none answered.

        A producer that does not answer leaves its devices out of the facts."""
        answer = await self.ask(after, after_ts_ms)
        facts = answer.facts
        return None if facts is None else (answer.batches, facts)

    def close(self) -> None:
        for dealer in self._dealers:
            dealer.close()
