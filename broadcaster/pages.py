"""Plain HTTP on the WebSocket port: the dashboard (and its vendored chart library),
/healthz, /metrics, /metrics/samples (each device's newest sample), /schema.json and
/fleet.json (what the producers say of the fleet).

With an access token, every page but /healthz (and the dashboard's scripts and styles,
public code) needs it, like the stream itself: /metrics
tells who is connected and how much flows, the dashboard is only useful with the token
(its stream needs it) and refusing it says so plainly instead of a page that never
connects. /healthz stays open for load balancers and supervisors, which rarely carry
credentials: it tells only whether samples arrive, how many clients there are and the pid.
A scraper without the token uses `--metrics-port` (127.0.0.1 only) or sends the token as
`Authorization: Bearer`.
"""

from __future__ import annotations

import http
import json
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from broadcaster import palette
from common import metrics, schema

STATIC = Path(__file__).resolve().parent / "static"
VENDOR = STATIC / "vendor"  # third-party files, each in a folder named with its version


def schema_document(scenario: str | None = None) -> bytes:
    """What the dashboard needs to know of the data, from the one place that defines it, and
    the name of the scenario being run (None: none)."""
    return json.dumps(
        {
            "metrics": schema.METRICS,
            "anomaly_kinds": schema.ANOMALY_KINDS,
            "event_kinds": schema.EVENT_KINDS,
            "scenario": scenario,
            # a sample's keys (JSON) and columns (CSV), in order
            "columns": schema.COLUMNS,
            # every value `anomaly_metrics` can take, besides null
            "anomaly_metrics": schema.METRIC_SETS[1:],
            "colors": {"anomaly": palette.ANOMALY_COLORS, "event": palette.EVENT_COLORS},
        }
    ).encode()


def scenario_title(path: Path) -> str:
    """The `name` of a scenario file (its file name without .toml if it has none); ValueError
    with one line if it cannot be read. The producer checks the rest of the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).lower()
        raise ValueError(f"cannot read scenario {path}: {reason}") from None
    name = data.get("name", path.stem)
    return name if isinstance(name, str) and name.strip() else path.stem


_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


@dataclass
class Health:
    """When the last sample arrived, to tell a live stream from a stale one."""

    stale_after: float
    pipeline: str = ""  # which pipeline's stream this is (broadcaster.peers.pipeline_id)
    last_received: float | None = None  # monotonic
    last_timestamp_ms: int | None = None
    started: float = field(default_factory=time.monotonic)

    def saw(self, timestamp_ms: int) -> None:
        self.last_received = time.monotonic()
        self.last_timestamp_ms = timestamp_ms

    def report(self, clients: int) -> tuple[bool, dict]:
        age = None if self.last_received is None else time.monotonic() - self.last_received
        fresh = age is not None and age <= self.stale_after
        return fresh, {
            "status": "ok" if fresh else "stale",
            "last_sample_age_s": None if age is None else round(age, 3),
            "stale_after_s": self.stale_after,
            "clients": clients,
            # which process answered: broadcasters sharing a port (SO_REUSEPORT) differ by it
            "pid": os.getpid(),
            # and which pipeline: only broadcasters of one pipeline share a port
            "pipeline": self.pipeline,
        }


def respond(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str,
    extra: tuple = (),
    cache: str = "no-store",
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache),
            *extra,
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def page(
    connection: ServerConnection,
    request: Request,
    health: Health,
    clients: int,
    registry,
    authorized: bool = True,
    schema_body: bytes = schema_document(),
    fleet_body: bytes = b"{}",
    samples: Callable[[], bytes] | None = None,
) -> Response:
    """Answer a plain HTTP GET (anything that is not a WebSocket upgrade); `authorized`:
    the request carries the access token, or none is needed. `fleet_body` is /fleet.json
    (broadcaster.fleet), `samples` makes /metrics/samples (broadcaster.latest; None: off)."""
    path = request.path.split("?", 1)[0]
    if path == "/healthz":
        fresh, body = health.report(clients)
        status = http.HTTPStatus.OK if fresh else http.HTTPStatus.SERVICE_UNAVAILABLE
        return respond(status, json.dumps(body).encode() + b"\n", "application/json")
    if path.startswith("/vendor/") or path.endswith((".js", ".css")):
        return _static(path)  # the page's code and its library: public, served without token
    if not authorized:
        return respond(
            http.HTTPStatus.UNAUTHORIZED,
            b"missing or wrong token: add ?token=... or send Authorization: Bearer ...\n",
            "text/plain; charset=utf-8",
            (("WWW-Authenticate", 'Bearer realm="stream"'),),
        )
    if path == "/metrics":
        return respond(http.HTTPStatus.OK, metrics.exposition(registry), metrics.CONTENT_TYPE)
    if path == metrics.SAMPLES_PATH and samples is not None:
        return respond(http.HTTPStatus.OK, samples(), metrics.CONTENT_TYPE)
    if path == "/schema.json":
        return respond(http.HTTPStatus.OK, schema_body, "application/json")
    if path == "/fleet.json":
        return respond(http.HTTPStatus.OK, fleet_body, "application/json")
    return _static(path)


def _static(path: str) -> Response:
    """A file of the page's folder (index.html for /); 404 for anything else."""
    name = "index.html" if path in ("", "/") else path.lstrip("/")
    file = (STATIC / name).resolve()
    if STATIC not in file.parents or not file.is_file() or file.suffix not in _TYPES:
        return respond(http.HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
    # Vendored files are named by their version: a browser may keep them.
    cache = "public, max-age=86400, immutable" if VENDOR in file.parents else "no-store"
    return respond(http.HTTPStatus.OK, file.read_bytes(), _TYPES[file.suffix], cache=cache)
