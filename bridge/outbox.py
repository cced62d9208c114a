"""The bounded store of what the broker has not acknowledged yet.

Samples wait here from the moment they are received until the broker acknowledges them.
While the broker is away they pile up; past the bound the oldest are given up, and the
exact seqs given up come back as gap records for the gaps file: nothing is dropped
silently.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from bridge.message import Block, Item, messages, row_gaps
from common import schema
from delivery.gaps import Gap, GapRecord
from delivery.reasons import Reason


class Outbox:
    """Samples not acknowledged yet, at most `max_samples` of them.

    Guarantees: messages come out in the order their samples went in, except that a
    message taken and not acknowledged comes back first, as the very same message (same
    id, same payload), until it is acknowledged; past `max_samples`, the oldest samples
    never sent are given up and returned by `add` as gaps. Those are exactly the samples
    the broker cannot have: what was sent may have been stored with its acknowledgement
    lost, so it is never given up (it is at most one window of messages, which may take
    the total that far past the bound). Once past the bound, it gives up down to a tenth
    below it: a bridge that stays behind its producers then records a few long gaps per
    device, not one gap per sample (which cost more than the samples themselves and made
    a bridge that fell behind fall further). `drain` returns everything still held as gaps.

    With `blocks`, what comes out is blocks (bridge.message.Block) of up to `max_messages`
    samples each instead of one-sample messages, for a sink that needs no message ids.
    """

    def __init__(self, max_samples: int, batch_max: int = 1, blocks: bool = False) -> None:
        self.max_samples = max_samples
        self.batch_max = batch_max
        self.blocks = blocks
        self._retry: deque[Item] = deque()  # sent, not acknowledged, to send again
        self._made: deque[Item] = deque()  # made into messages, never sent
        self._rows: deque[schema.Batch] = deque()  # not made into messages yet
        self._rows_since: float | None = None  # when the oldest of _rows came (monotonic)
        self._in_flight: dict[int, Item] = {}
        self._held = 0  # samples in _made and _rows
        self._flying = 0  # samples in flight
        self._more = asyncio.Event()
        self.given_up = 0  # samples
        self.retried = 0  # messages sent again
        # Per device, (seq, timestamp ms) up to which every sample was acknowledged, or
        # given up and recorded as a gap: where a restarted bridge continues.
        self.done: dict[str, tuple[int, int]] = {}

    @property
    def held(self) -> int:
        """Samples not acknowledged yet (waiting or being published)."""
        return self._held + self._flying

    def add(self, batch: schema.Batch) -> list[Gap]:
        """Hold new samples; return the gaps given up to stay within the bound."""
        if len(batch):
            if not self._rows:
                self._rows_since = time.monotonic()
            self._rows.append(batch)
            self._held += len(batch)
            self._more.set()
        over = self.held - self.max_samples
        return self._give_up(over + self.max_samples // 10) if over > 0 else []

    def take(self, max_messages: int) -> list[Item]:
        """Up to about `max_messages` messages to publish now, oldest first; each must be
        settled. (With blocks: blocks of `max_messages` samples at most in all, counting
        those sent again.)"""
        out: list[Item] = []
        while self._retry and len(out) < max_messages:
            out.append(self._retry.popleft())
        while self._made and len(out) < max_messages:
            out.append(self._made.popleft())
        if self.blocks:
            budget = max_messages - sum(item.samples for item in out)
        else:
            budget = (max_messages - len(out)) * self.batch_max
        taken: list[schema.Batch] = []
        while self._rows and budget > 0:
            batch = self._rows.popleft()
            if len(batch) > budget:
                self._rows.appendleft(batch.with_rows(batch.rows[budget:]))
                batch = batch.with_rows(batch.rows[:budget])
            taken.append(batch)
            budget -= len(batch)
        if not self._rows:
            self._rows_since = None
        for batch in schema.merge(taken):
            out += [Block(batch)] if self.blocks else messages(batch, self.batch_max)
        if len(out) > max_messages:  # batched: more devices than the budget assumed
            self._made.extendleft(reversed(out[max_messages:]))
            out = out[:max_messages]
        for message in out:
            self._in_flight[id(message)] = message
            self._held -= message.samples
            self._flying += message.samples
        if not self._held:
            self._more.clear()
        return out

    def settle(self, sent: list[Item], acked: list[bool]) -> int:
        """The broker's answer for messages taken: the acknowledged ones are done, the others
        come back first, to be sent again as they are. Returns the samples acknowledged.

        `done` moves past a device's acknowledged messages up to its first one that was not
        (messages come out oldest first, and one sent again comes back before any newer)."""
        back = []
        done = 0
        held_back: set[str] = set()  # devices with a message not acknowledged in this lot
        for message, ok in zip(sent, acked, strict=True):
            if self._in_flight.pop(id(message), None) is None:
                continue  # given up meanwhile (drain)
            self._flying -= message.samples
            if isinstance(message, Block):
                if ok:
                    done += message.samples
                    self._move(message.ends(), held_back)
                else:
                    back.append(message)
                    held_back.update(message.starts())
            elif ok:
                done += message.samples
                self._move({message.device: (message.last, message.last_ms)}, held_back)
            else:
                back.append(message)
                held_back.add(message.device)
        if back:
            self.retried += len(back)
            self._retry.extendleft(reversed(back))
            self._held += sum(m.samples for m in back)
            self._more.set()
        return done

    def _move(self, ends: dict[str, tuple[int, int]], held_back: set[str]) -> None:
        """`done` moves to each device's end, unless an earlier message of it was not
        acknowledged."""
        done = self.done
        for device, where in ends.items():
            if device not in held_back and where[0] > done.get(device, (-1, 0))[0]:
                done[device] = where

    def due_in(self, linger: float, now: float | None = None) -> float:
        """Seconds until a take is due when samples may wait up to `linger` s to fill larger
        messages (--batch): 0 for messages to send again or already made, or once the
        oldest waiting sample has waited `linger`; inf if nothing is held."""
        if self._retry or self._made:
            return 0.0
        if self._rows_since is None:
            return float("inf")
        now = time.monotonic() if now is None else now
        return max(0.0, self._rows_since + linger - now)

    async def wait(self, timeout: float) -> None:
        """Until there is something to take, or `timeout` seconds."""
        try:
            await asyncio.wait_for(self._more.wait(), timeout)
        except TimeoutError:
            pass

    def drain(self) -> list[GapRecord]:
        """Give up everything held (the bridge is stopping): the gaps and their reasons,
        `unacknowledged` for what was sent, `unsent` for the rest."""
        sent = [*self._in_flight.values(), *self._retry]
        self._held -= sum(m.samples for m in self._retry)
        self._in_flight.clear()
        self._retry.clear()
        self._flying = 0
        counted = self.given_up  # `given_up` counts what the bound dropped, not this
        unsent = self._give_up(self._held)
        self.given_up = counted
        return [GapRecord(g, Reason.UNACKNOWLEDGED) for m in sent for g in _gaps(m)] + [
            GapRecord(g, Reason.UNSENT) for g in unsent
        ]

    def _give_up(self, count: int) -> list[Gap]:
        """Drop the `count` oldest samples never sent (or as many as there are); their gaps."""
        gaps: list[Gap] = []
        dropped = 0
        while dropped < count and self._made:
            message = self._made.popleft()
            gaps += _gaps(message)
            dropped += message.samples
        rows: list[schema.Batch] = []
        while dropped < count and self._rows:
            batch = self._rows.popleft()
            if len(batch) > count - dropped:
                keep = len(batch) - (count - dropped)
                self._rows.appendleft(batch.with_rows(batch.rows[-keep:]))
                batch = batch.with_rows(batch.rows[:-keep])
            rows.append(batch)
            dropped += len(batch)
        if not self._rows:
            self._rows_since = None
        for batch in schema.merge(rows):
            gaps += row_gaps(batch.rows)
        self._held -= dropped
        self.given_up += dropped
        if not self._held:
            self._more.clear()
        return gaps


def _gaps(item: Item) -> list[Gap]:
    if isinstance(item, Block):
        return item.gaps()
    return [Gap(item.device, item.first, item.last, item.first_ms, item.last_ms)]
