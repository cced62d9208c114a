"""Why samples were not delivered: the one vocabulary of gap reasons, one word per fact.

Every gap record (a logger's or a bridge's gaps file, a WebSocket client's gap message, the
scorer's counts by reason) names its seqs with one of these words, and who may record it:

not_held        The producer published them, and its history no longer holds them (the
                consumer was away longer than `--history`). Logger, bridge, scorer,
                broadcaster.
not_produced    Never published: the producer skipped them (paused, behind schedule) or was
                down (the gap ends where its current run began). Logger, bridge, scorer,
                broadcaster.
earlier_run     Before the producer's current run began, met by a consumer that starts
                mid-series: published by an earlier run, or never (it was down); not held
                either way. Logger, bridge, scorer.
invalid_input   The producer refused to publish them: not valid samples (a replay row). Its
                own word, passed on in its catch-up answer. Logger, bridge, scorer,
                broadcaster.
refused         Published, but in messages this consumer could not accept (undecodable or
                invalid), and the history could not give them again. Logger, bridge, scorer,
                broadcaster.
unavailable     No producer answered: whether they were published, and whether they are
                held, is not known (a seq jump, a device first met, a resume). Logger,
                bridge, scorer, broadcaster.
over_limit      Held, but past the bound of one resume (`--resume-max`). Broadcaster.
given_up        Received, then dropped past the bound of samples held for the broker
                (`--max-unsent`). Bridge.
unsent          Received, never sent: the bridge stopped first. Bridge.
unacknowledged  Sent, not acknowledged when the bridge stopped (the broker may have them).
                Bridge.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """A gap reason (see the module docstring); its value is the word on the wire and in files."""

    NOT_HELD = "not_held"
    NOT_PRODUCED = "not_produced"
    EARLIER_RUN = "earlier_run"
    INVALID_INPUT = "invalid_input"
    REFUSED = "refused"
    UNAVAILABLE = "unavailable"
    OVER_LIMIT = "over_limit"
    GIVEN_UP = "given_up"
    UNSENT = "unsent"
    UNACKNOWLEDGED = "unacknowledged"


def known(word: str) -> Reason | str:
    """A reason word from a producer's answer: the Reason it names, or the word itself if
    this consumer does not know it (a newer producer's: it is passed on, not dropped)."""
    try:
        return Reason(word)
    except ValueError:
        return word
