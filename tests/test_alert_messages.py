"""Alert messages as the broadcaster parses them: good ones become records, anything else
an AlertError with a reason, never another exception."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.alerts import AlertError, AlertLimit, Latest, alert_body, parse
from broadcaster.subscription import Subscription
from common import alerts, schema


def latest() -> Latest:
    rows = schema.empty_rows(4)
    rows["device"] = [b"host-01", b"host-02"] * 2
    rows["seq"] = [10, 10, 11, 11]
    rows["ts_ms"] = [1_000, 1_000, 2_000, 2_000]
    state = Latest()
    state.update(rows)
    return state


def test_good_alerts_become_records():
    """seq or timestamp, score, kind and detector end up in the wire records."""
    records = parse([{"device": "host-01", "seq": 11, "score": 2.5, "kind": "spike"},
                     {"device": "host-02", "timestamp": "1970-01-01 00:00:01", "detector": "z"}],
                    Subscription(), latest(), "conn", 99)
    assert records["seq"].tolist() == [11, alerts.NO_SEQ]
    assert records["ts_ms"].tolist() == [alerts.NO_TIME, 1_000]
    assert records["detector"].tolist() == [b"conn", b"z"]
    assert records["kind"].tolist() == [1, 0] and np.isnan(records["score"][1])
    assert records["received_ms"].tolist() == [99, 99]
    source, first, back = alerts.decode(alerts.encode(records, 5, 40))
    assert (source, first) == (5, 40) and back.tobytes() == records.tobytes()


@pytest.mark.parametrize(
    "body, reason, words",
    [
        ({"device": "host-09", "seq": 1}, "unknown_device", "unknown device"),
        ({"device": "host-01", "seq": 12}, "future", "in the future"),
        ({"device": "host-01", "timestamp": 2_001}, "future", "in the future"),
        ({"device": "host-01"}, "invalid", "by seq or timestamp"),
        ({"device": "host-01", "seq": -1}, "invalid", "integer >= 0"),
        ({"device": "host-01", "seq": 1, "score": "high"}, "invalid", "finite number"),
        ({"device": "host-01", "seq": 1, "kind": "meteor"}, "invalid", "unknown kind"),
        ({"device": "host-01", "seq": 1, "colour": 1}, "invalid", "unknown key"),
        ([], "invalid", "1 to 1000"),
        ("host-01", "invalid", "an object"),
    ],
)
def test_bad_alerts_name_the_problem(body, reason, words):
    """Each bad alert is refused with its reason and a line saying what is wrong."""
    with pytest.raises(AlertError) as refused:
        parse(body, Subscription(), latest(), "d", 0)
    assert refused.value.reason == reason and words in str(refused.value)


def test_alerts_outside_the_subscription_are_refused():
    """A connection alerts only on devices it receives."""
    with pytest.raises(AlertError) as refused:
        parse({"device": "host-02", "seq": 1}, Subscription(devices=frozenset({"host-01"})),
              latest(), "d", 0)
    assert refused.value.reason == "not_subscribed"


def test_alert_rate_limit_and_flood():
    """Past the rate alerts are refused; past ten times the rate the connection floods."""
    limit = AlertLimit(100)
    assert limit.allow(1.0, 100) and not limit.allow(1.0, 1)
    assert not limit.flood(1.0, 800) and limit.flood(1.0, 300)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                    max_leaves=12))
def test_any_json_is_taken_or_refused_cleanly(body):
    """Whatever JSON a client sends as an alert, it is parsed or refused with AlertError."""
    text = json.dumps({"alert": body})
    assert json.dumps(alert_body(text)) == json.dumps(body)  # as text: NaN is not equal to itself
    try:
        parse(body, Subscription(), latest(), "d", 0)
    except AlertError:
        pass
