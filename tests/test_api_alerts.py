"""Stream.alert with real processes: alerts go back on the stream's own connection to a real
broadcaster, which passes them to the scorer of its own Pipeline (never to another's);
Pipeline.report() reads that scorer's report. Blind streams are asked of the server."""

from __future__ import annotations

import pytest

import streamsim
from conftest import Pipeline, wait_until

LABELS = {"anomaly", "anomaly_id", "anomaly_root", "event", "anomaly_metrics"}


def test_alerts_reach_the_pipelines_own_scorer():
    """On a blind stream three alerts (by sample, by seq, by timestamp) are acknowledged and
    scored by this pipeline's scorer under the stream's detector name; one the broadcaster
    refuses is kept in `errors` and the stream goes on; a stream ended by its count sends
    the alerts made on its last samples before it closes; another pipeline's scorer gets
    none; after stop() the report is the one the scorer wrote as it stopped."""
    with (
        streamsim.Pipeline(devices=2, rate=20, seed=5, labels="blind", scorer=True) as mine,
        streamsim.Pipeline(devices=2, rate=20, seed=5, scorer=True) as other,
    ):
        live = streamsim.stream(mine.url, detector="zscore", timeout=30)
        first, second, third = next(live), next(live), next(live)
        assert not LABELS & {*first, *second, *third}  # the server's default: blind
        live.alert(first, score=0.9, kind="spike")
        live.alert(second["device"], second["seq"])
        live.alert(third["device"], timestamp=third["timestamp"])
        wait_until(lambda: live.alerts_acknowledged == 3, timeout=10)
        live.alert("host-99", 0)  # a message is taken or refused whole: this one alone
        wait_until(lambda: live.errors, timeout=10)
        later = [next(live) for _ in range(3)]  # the stream goes on
        assert len({(s["device"], s["seq"]) for s in later}) == 3
        counted = streamsim.stream(mine.url, labels=False, detector="each", count=30)
        for sample in counted:  # read ahead by its thread: the last alerts come after
            counted.alert(sample)
        assert counted.alerts_sent == counted.alerts_acknowledged == 30
        report = mine.report()
        assert report.detectors["each"]["alerts"]["received"] == 30
        assert live.alerts_sent == 4
        assert len(live.errors) == 1 and "unknown device 'host-99'" in live.errors[0]
        live.close()
        assert report.run["alerts_received"] == 3 + 30 and report.run["alerts_lost"] == 0
        alerts = report.detectors["zscore"]["alerts"]
        assert alerts["received"] == alerts["distinct"] == 3
        assert alerts["not_a_sample"] == alerts["unknown_device"] == 0
        frame = report.to_frame()
        assert frame.index.names == ["detector", "kind"]
        assert frame.loc[("zscore", "overall"), "events"] >= 0
        strange = other.report()
        assert strange.detectors == {} and strange.run["alerts_received"] == 0
        assert strange.to_frame().empty
    final = mine.report()
    assert final.detectors["zscore"]["alerts"]["received"] == 3
    assert final.run["samples"] >= report.run["samples"]


def test_labels_are_asked_of_the_server(pipeline: Pipeline):
    """labels=False asks for a blind stream and labels=True for the labels (?labels=0/1),
    whatever the server's default; a server that never sends labels refuses labels=True."""
    pipeline.producer("--rate", "20", "--devices", "2")
    pipeline.broadcaster()  # --labels sent
    sent = pipeline.ws_url
    pipeline.broadcaster("--labels", "blind")
    blind = pipeline.ws_url
    pipeline.broadcaster("--labels", "never")
    never = pipeline.ws_url
    assert all(LABELS <= set(s) for s in streamsim.stream(sent, count=5))
    assert not any(LABELS & set(s) for s in streamsim.stream(sent, labels=False, count=5))
    assert not any(LABELS & set(s) for s in streamsim.stream(blind, count=5))
    assert all(LABELS <= set(s) for s in streamsim.stream(blind, labels=True, count=5))
    with pytest.raises(ValueError, match="labels are not sent by this server"):
        list(streamsim.stream(never, labels=True, count=1))
    assert not any(LABELS & set(s) for s in streamsim.stream(never, count=5))


def test_a_pipeline_without_a_scorer_has_no_report_and_bad_settings_are_refused():
    """report() needs a scorer; scoring settings need one too, and must be the scorer's:
    an unknown name is refused at once, a value it refuses is its own one-line error."""
    with pytest.raises(ValueError, match="scoring settings need a scorer"):
        streamsim.Pipeline(scoring={"late_s": 3})
    with pytest.raises(ValueError, match="unknown scoring setting 'late'; allowed: early_s"):
        streamsim.Pipeline(scorer=True, scoring={"late": 3})
    with pytest.raises(ValueError, match="'sideways' is not one of"):
        streamsim.Pipeline(scorer=True, scoring={"range_bias": "sideways"})
    with streamsim.Pipeline(devices=1, rate=5) as plain:
        with pytest.raises(RuntimeError, match="no scorer"):
            plain.report()


def test_an_alert_that_names_no_sample_is_refused_at_once():
    """No seq nor timestamp, a kind that is not one, a score that is not finite: ValueError."""
    live = streamsim.stream("ws://127.0.0.1:1")
    with pytest.raises(ValueError, match="needs the sample's seq or timestamp"):
        live.alert("host-01")
    with pytest.raises(ValueError, match="unknown anomaly kind 'spik'"):
        live.alert("host-01", 3, kind="spik")
    with pytest.raises(ValueError, match="finite"):
        live.alert("host-01", 3, score=float("nan"))
