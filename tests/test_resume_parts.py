"""Resuming, part by part: the `since` parser, the producer's bounded history answer, the
catch-up protocol's new fields, and the plan of what a resuming client is sent."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import numpy as np
import pytest

from broadcaster import backlog
from broadcaster.since import Since, SinceError, check, from_query
from broadcaster.subscription import Subscription, SubscriptionError, parse_message
from common import schema
from delivery import protocol
from producer.catchup.history import History


class TestSinceParser:
    def test_bare_seq_means_every_device(self):
        """since=SEQ resumes every device subscribed to after SEQ."""
        since = from_query("since=123")
        assert since == Since(123, {})
        assert since.after(None) == ({}, 123)
        assert since.after(frozenset({"b", "a"})) == ({"a": 123, "b": 123}, None)

    def test_no_since_is_no_resume(self):
        """Without since there is nothing to resume (the token and filters are not ours)."""
        assert from_query("devices=host-01&token=x") is None

    def test_per_device_values_split_at_the_last_colon(self):
        """Repeated DEVICE:SEQ values, percent-encoded, may name ids holding colons, commas,
        quotes, spaces and non-ASCII letters; the last colon separates the seq."""
        odd = ['rack:1,"a"', "höst 7", "x:y:z", "123"]
        query = urlencode([("since", f"{d}:{i}") for i, d in enumerate(odd)])
        since = from_query(query)
        assert since == Since(None, {d: i for i, d in enumerate(odd)})
        assert since.after(None) == ({d: i for i, d in enumerate(odd)}, None)

    def test_a_bare_seq_and_per_device_values_mix(self):
        """A bare seq covers the devices not named; named ones use their own."""
        since = from_query("since=100&since=host-02%3A456")
        assert since == Since(100, {"host-02": 456})
        subscribed = frozenset({"host-01", "host-02"})
        assert since.after(subscribed) == ({"host-01": 100, "host-02": 456}, None)

    def test_message_forms_mean_the_same_as_the_query(self):
        """{"resume": {"since": N}} and {"resume": {"since": {device: N}}} parse like the URL."""
        assert parse_message('{"resume": {"since": 7}}') == from_query("since=7")
        by_device = parse_message('{"resume": {"since": {"a:b": 1, "c": 2}}}')
        assert by_device == from_query("since=a:b:1&since=c:2")
        assert isinstance(parse_message('{"subscribe": {"batch": true}}'), Subscription)

    @pytest.mark.parametrize(
        "query, words",
        [
            ("since=", "since must be SEQ or DEVICE:SEQ"),
            ("since=abc", "since must be SEQ or DEVICE:SEQ"),
            ("since=host-01:", "since must be SEQ or DEVICE:SEQ"),
            ("since=host-01:1.5", "since must be SEQ or DEVICE:SEQ"),
            ("since=:5", "needs a device id before the last colon"),
            ("since=1&since=2", "a bare seq may be given once"),
            ("since=a:1&since=a:2", "gives 'a' twice"),
            ("since=-2", "must be between -1 and"),
            ("since=99999999999999999999", "must be between -1 and"),
            ("since=" + "9" * 5000, "must be between -1 and"),
            ("since=" + "d" * 65 + ":1", "bad device id"),
            ("since=a%00b:1", "bad device id"),
        ],
    )
    def test_bad_query_values_are_named(self, query, words):
        """Each bad since value is refused with a message naming it and what is allowed."""
        with pytest.raises(SinceError, match=words):
            from_query(query)

    @pytest.mark.parametrize(
        "body, words",
        [
            ({"since": "12"}, "must be a JSON integer"),
            ({"since": True}, "must be an integer seq"),
            ({"since": 1.5}, "must be an integer seq"),
            ({"since": None}, "must be an integer seq"),
            ({"since": {"a": "1"}}, "must be a JSON integer"),
            ({"since": {"": 1}}, "needs a device id"),
            ({"since": 1, "until": 2}, "unknown key 'until'"),
            ({}, 'resume needs "since"'),
            ([1], '"resume" must be an object'),
        ],
    )
    def test_bad_messages_are_named(self, body, words):
        """A bad resume message is refused with a message naming what is wrong."""
        with pytest.raises(SinceError, match=words):
            parse_message(json.dumps({"resume": body}))

    def test_other_messages_are_refused(self):
        """Anything but one subscribe or resume object is a subscription error."""
        for text in ["hello", "[]", '{"resume": {}, "subscribe": {}}', '{"unsubscribe": {}}']:
            with pytest.raises((SubscriptionError, SinceError)):
                parse_message(text)

    @pytest.mark.parametrize(
        "subscription, since, words",
        [
            ("max_rate=5", "since=1", "cannot be combined with max_rate"),
            ("history=10", "since=1", "since and history are alternatives"),
            ("devices=host-01", "since=host-02:1", "not among the devices asked"),
        ],
    )
    def test_a_resume_must_fit_the_subscription(self, subscription, since, words):
        """A resume the subscription cannot give exactly is refused, naming why."""
        with pytest.raises(SinceError, match=words):
            check(from_query(since), Subscription.from_query(subscription))


def ticks(first_seq: int, count: int, devices: list[str], start_ms: int = 0) -> schema.Batch:
    """`count` ticks of every device, seqs from `first_seq`, 100 ms apart."""
    rows = schema.empty_rows(count * len(devices))
    for k in range(count):
        for i, device in enumerate(devices):
            row = rows[k * len(devices) + i]
            row["ts_ms"], row["seq"], row["device"] = start_ms + 100 * k, first_seq + k, device
    return schema.Batch(rows, schema.MILLISECONDS)


def pairs(batches) -> list[tuple[str, int]]:
    return [(r["device"].decode(), int(r["seq"])) for b in batches for r in b.rows]


class TestHistoryLimit:
    def test_limit_keeps_the_newest_and_names_the_rest(self):
        """With a limit the newest samples are sent and, per device, the seqs held but left
        out are named exactly."""
        history = History(600, 1 << 30)
        history.add(ticks(10, 20, ["a", "b"]), now=0.0)
        batches, given_up = history.select({}, 0, after_seq=14, limit=7)
        got = pairs(batches)
        assert got == [("b", 26), ("a", 27), ("b", 27), ("a", 28), ("b", 28), ("a", 29), ("b", 29)]
        assert given_up == {"a": (15, 26), "b": (15, 25)}

    def test_after_seq_asks_every_device_by_seq(self):
        """after_seq applies to the devices not listed in after; listed ones keep theirs."""
        history = History(600, 1 << 30)
        history.add(ticks(0, 5, ["a", "b"]), now=0.0)
        got = pairs(history.since({"a": 3}, 0, after_seq=2))
        assert got == [("b", 3), ("a", 4), ("b", 4)]
        assert pairs(history.since({"a": 3}, 10**12)) == [("a", 4)]  # the old by-time rule

    def test_without_limit_nothing_is_given_up(self):
        """Under the limit, everything asked for is sent and nothing is named."""
        history = History(600, 1 << 30)
        history.add(ticks(0, 3, ["a"]), now=0.0)
        batches, given_up = history.select({"a": -1}, 0, limit=3)
        assert pairs(batches) == [("a", 0), ("a", 1), ("a", 2)] and given_up == {}


class TestProtocol:
    def test_old_requests_and_answers_still_read(self):
        """A request without the new keys decodes as before; an answer without the optional
        keys decodes with their defaults, and one with them round-trips."""
        old = [protocol.REQUEST, json.dumps({"after": {"a": 1}, "after_ts_ms": 5}).encode()]
        assert protocol.decode_request(old) == protocol.Request({"a": 1}, 5, None, None)
        full = protocol.End({"a": 1}, {"a": 0}, [(3, 4)], {"a": (1, 9)}, 0, {"a": [(5, 5, "x")]})
        assert protocol.decode_reply(protocol.encode_end(full)) == full
        plain = {"oldest": {"a": 1}, "run_first": {"a": 0}, "skipped": [[3, 4]]}
        old_end = [protocol.END, json.dumps(plain).encode()]
        assert protocol.decode_reply(old_end) == protocol.End({"a": 1}, {"a": 0}, [(3, 4)])
        assert "given_up" not in json.loads(protocol.encode_end(protocol.End())[1])

    def test_new_request_keys_round_trip_and_are_checked(self):
        """after_seq and limit travel in the request; a limit below 1 is refused."""
        frames = protocol.encode_request({"a": 1}, 5, after_seq=7, limit=100)
        assert protocol.decode_request(frames) == protocol.Request({"a": 1}, 5, 7, 100)
        with pytest.raises(protocol.ProtocolError, match="limit must be >= 1"):
            protocol.decode_request(protocol.encode_request({}, 0, limit=0))


def end(oldest, run_first=None, skipped=(), given_up=None) -> protocol.End:
    return protocol.End(oldest, run_first or oldest, list(skipped), given_up or {})


class TestPlan:
    def test_nothing_missing_means_no_gap(self):
        """History from the seq after since: no gap, and live samples continue above it."""
        answer = backlog.Answer([ticks(11, 5, ["a"])], [end({"a": 0})], 1, 1)
        plan = backlog.plan({}, 10, answer, limit=100)
        assert plan.gaps == [] and pairs(plan.batches) == [("a", s) for s in range(11, 16)]
        live = plan.watermark.admit(ticks(14, 4, ["a"]))
        assert pairs([live]) == [("a", 16), ("a", 17)]  # overlap with the history dropped

    def test_history_is_shown_as_it_was_published(self):
        """A replay's samples keep their decimals and timestamp precision when resumed, also
        when two producers' batches differ in both (a resume shows what live showed)."""
        three = schema.Batch(ticks(11, 3, ["a"]).rows, schema.MILLISECONDS, decimals=3)
        one = schema.Batch(ticks(11, 3, ["b"], start_ms=50).rows, schema.SECONDS)
        answer = backlog.Answer([three, one], [end({"a": 11}), end({"b": 11})], 2, 2)
        plan = backlog.plan({}, 10, answer, limit=100)
        shown = {(b.rows["device"][0].decode(), b.precision, b.decimals) for b in plan.batches}
        assert shown == {("a", schema.MILLISECONDS, 3), ("b", schema.SECONDS, 1)}
        live = plan.watermark.admit(schema.Batch(ticks(13, 2, ["a"]).rows, decimals=3))
        assert live.decimals == 3

    def test_older_than_held_and_over_the_bound_are_separate_ranges(self):
        """Seqs older than the producer holds are not_held; held ones cut by the bound are
        over_limit; together they end just before the first sample sent."""
        answer = backlog.Answer(
            [ticks(52, 8, ["a"])], [end({"a": 40}, given_up={"a": (40, 51)})], 1, 1
        )
        plan = backlog.plan({"a": 10}, None, answer, limit=5)
        assert [g.describe() for g in plan.gaps] == [
            {"device": "a", "from_seq": 11, "to_seq": 39, "reason": "not_held"},
            {"device": "a", "from_seq": 40, "to_seq": 54, "reason": "over_limit"},
        ]
        assert pairs(plan.batches) == [("a", s) for s in range(55, 60)]

    def test_a_skipped_range_is_not_produced(self):
        """A gap inside a range the producer skipped (paused) is named not_produced."""
        answer = backlog.Answer([ticks(30, 2, ["a"])], [end({"a": 0}, skipped=[(20, 29)])], 1, 1)
        gaps = backlog.plan({"a": 19}, None, answer, limit=10).gaps
        assert [(g.from_seq, g.to_seq, g.reason) for g in gaps] == [(20, 29, "not_produced")]

    def test_a_withheld_range_is_named_with_the_producers_reason(self):
        """A gap the producer withheld whole (invalid replay rows) is named with its reason,
        as a logger's gaps file names it."""
        withheld = protocol.End({"a": 0}, {"a": 0}, [], {}, 0, {"a": [(20, 29, "invalid_input")]})
        answer = backlog.Answer([ticks(30, 2, ["a"])], [withheld], 1, 1)
        gaps = backlog.plan({"a": 19}, None, answer, limit=10).gaps
        assert [(g.from_seq, g.to_seq, g.reason) for g in gaps] == [(20, 29, "invalid_input")]

    def test_a_device_cut_entirely_has_its_gap_end_at_its_last_held_seq(self):
        """When the bound leaves nothing of a device, its gap ends at the newest seq held, so
        its next live sample follows the gap exactly."""
        answer = backlog.Answer(
            [ticks(5, 3, ["a", "b"])], [end({"a": 5, "b": 5})], asked=1, answered=1
        )
        plan = backlog.plan({}, 4, answer, limit=1)
        assert [(g.device, g.from_seq, g.to_seq) for g in plan.gaps] == [
            ("a", 5, 7),
            ("b", 5, 6),
        ]
        assert pairs([plan.watermark.admit(ticks(7, 2, ["a", "b"]))]) == [("a", 8), ("b", 8)]

    def test_a_device_of_another_series_below_a_bare_since_is_not_held_back(self):
        """A bare since above a device's own seqs (another producer's series) finds nothing
        in the history for it, names no gap, and lets its live samples through."""
        answer = backlog.Answer([ticks(101, 2, ["a"])], [end({"a": 90}), end({"b": 3})], 2, 2)
        plan = backlog.plan({}, 100, answer, limit=10)
        assert plan.gaps == [] and pairs(plan.batches) == [("a", 101), ("a", 102)]
        live = plan.watermark.admit(ticks(5, 2, ["a", "b"]))
        assert pairs([live]) == [("b", 5), ("b", 6)]

    def test_a_producer_that_does_not_answer_is_named_unavailable(self):
        """Devices asked of a producer that did not answer get an open-ended gap."""
        answer = backlog.Answer([], [], asked=2, answered=0)
        plan = backlog.plan({"a": 3}, 9, answer, limit=10)
        assert [g.describe() for g in plan.gaps] == [
            {"device": "a", "from_seq": 4, "to_seq": None, "reason": "unavailable"},
            {"device": None, "from_seq": 10, "to_seq": None, "reason": "unavailable"},
        ]

    def test_the_bound_keeps_the_newest_across_producers(self):
        """Of two producers' answers the newest samples by time are kept, oldest first."""
        one = ticks(100, 3, ["a"], start_ms=0)
        two = ticks(7, 3, ["b"], start_ms=50)
        answer = backlog.Answer([one, two], [end({"a": 100}), end({"b": 7})], 2, 2)
        plan = backlog.plan({"a": 99, "b": 6}, None, answer, limit=4)
        assert pairs(plan.batches) == [("a", 101), ("b", 8), ("a", 102), ("b", 9)]
        assert [(g.device, g.from_seq, g.to_seq) for g in plan.gaps] == [
            ("a", 100, 100),
            ("b", 7, 7),
        ]

    def test_watermark_drops_repeats_within_a_batch(self):
        """A sample that reached the broadcaster twice (two bus topics) is sent once."""
        mark = backlog.Watermark({"a": 1})
        twice = schema.Batch(np.concatenate([ticks(2, 2, ["a"]).rows, ticks(2, 3, ["a"]).rows]))
        assert pairs([mark.admit(twice)]) == [("a", 2), ("a", 3), ("a", 4)]
