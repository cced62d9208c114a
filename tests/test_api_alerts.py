"""Stream.alert: alerts go back on the stream's own connection, in the scorer's message
shape ({"alert": [...]}), named with ?detector=; acknowledgements are counted and refusals
kept. The peer here is a small real WebSocket server speaking the broadcaster's alert
protocol: this branch's broadcaster does not take alerts yet."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.sync.server import ServerConnection, serve

import streamsim
from conftest import wait_until

SAMPLES = [
    {
        "timestamp": f"2025-08-04 00:00:0{i}",
        "cpu": 1.0,
        "mem": 2.0,
        "disk_io": 3.0,
        "net": 4.0,
        "device": "host-01",
        "seq": i,
        "anomaly": None,
        "anomaly_id": None,
        "anomaly_root": None,
        "event": None,
    }
    for i in range(3)
]


class Peer:
    """Sends three samples, then answers each alert message as the broadcaster does."""

    def __init__(self) -> None:
        self.queries: list[dict] = []
        self.alerts: list[dict] = []

    def handle(self, connection: ServerConnection) -> None:
        self.queries.append(parse_qs(urlsplit(connection.request.path).query))
        connection.send(json.dumps(SAMPLES))
        for message in connection:
            batch = json.loads(message)["alert"]
            unknown = [a["device"] for a in batch if a["device"] != "host-01"]
            if unknown:
                connection.send(json.dumps({"error": f"unknown device {unknown[0]!r}"}))
                continue
            self.alerts += batch
            connection.send(json.dumps({"alerted": len(batch)}))


def test_alerts_go_back_on_the_stream_and_are_acknowledged():
    """Three alerts (by sample, by seq, by timestamp) reach the server in one shape and are
    acknowledged; one it refuses is kept in `errors` and the stream goes on."""
    peer = Peer()
    with serve(peer.handle, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        live = streamsim.stream(f"ws://127.0.0.1:{port}", detector="zscore", timeout=20)
        first = next(live)
        live.alert(first, score=0.9, kind="spike")
        live.alert("host-01", 1)
        live.alert("host-01", timestamp=datetime(2025, 8, 4, 0, 0, 2, tzinfo=UTC))
        wait_until(lambda: live.alerts_acknowledged == 3, timeout=10)
        live.alert("host-99", 0)
        wait_until(lambda: live.errors, timeout=10)
        assert [next(live)["seq"], next(live)["seq"]] == [1, 2]  # the stream goes on
        live.close()
    assert live.errors == ["unknown device 'host-99'"] and live.alerts_sent == 4
    assert peer.queries[0]["detector"] == ["zscore"]
    assert peer.alerts == [
        {"device": "host-01", "seq": 0, "score": 0.9, "kind": "spike"},
        {"device": "host-01", "seq": 1},
        {"device": "host-01", "timestamp": 1754265602000},
    ]


def test_an_alert_that_names_no_sample_is_refused_at_once():
    """No seq nor timestamp, a kind that is not one, a score that is not finite: ValueError."""
    live = streamsim.stream("ws://127.0.0.1:1")
    with pytest.raises(ValueError, match="needs the sample's seq or timestamp"):
        live.alert("host-01")
    with pytest.raises(ValueError, match="unknown anomaly kind 'spik'"):
        live.alert("host-01", 3, kind="spik")
    with pytest.raises(ValueError, match="finite"):
        live.alert("host-01", 3, score=float("nan"))
