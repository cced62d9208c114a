"""Prometheus metrics, read from the processes' own counters when scraped.

Each process hands over a function returning its figures; nothing is counted twice and
the hot paths stay free of metric calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from errno import EADDRINUSE
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from common.errors import StartupError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The broadcaster's newest sample of each device (broadcaster.latest), apart from the
# process's own figures: another scrape job, with a cardinality of its own.
SAMPLES_PATH = "/metrics/samples"


@dataclass(frozen=True)
class Figure:
    name: str  # without the stream_ prefix; counters without _total
    help: str
    value: float
    counter: bool = False
    labels: tuple[tuple[str, str], ...] = ()  # e.g. (("detector", "zscore"), ("kind", "spike"))


class _Reader(Collector):
    def __init__(self, read: Callable[[], list[Figure]]) -> None:
        self.read = read

    def collect(self):
        families: dict[str, object] = {}
        for figure in self.read():
            if not figure.labels:
                family = CounterMetricFamily if figure.counter else GaugeMetricFamily
                yield family(f"stream_{figure.name}", figure.help, value=figure.value)
                continue
            family = families.get(figure.name)
            if family is None:
                kind = CounterMetricFamily if figure.counter else GaugeMetricFamily
                family = families[figure.name] = kind(
                    f"stream_{figure.name}", figure.help, labels=[k for k, _ in figure.labels]
                )
            family.add_metric([v for _, v in figure.labels], figure.value)
        yield from families.values()


def registry(read: Callable[[], list[Figure]]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Reader(read))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)


ANY_PORT = -1  # `--metrics-port any`: a free port, reported in the ready file


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        """Scrapes come every few seconds: not one log line each."""


Pages = dict[str, Callable[[], bytes]]


def _app(reg: CollectorRegistry, pages: Pages):
    """The registry at any path (as prometheus_client serves it), `pages` at theirs."""
    figures = make_wsgi_app(reg)

    def app(environ, start_response):
        page = pages.get(environ.get("PATH_INFO", ""))
        if page is None:
            return figures(environ, start_response)
        body = page()
        start_response(
            "200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))]
        )
        return [body]

    return app


class MetricsServer:
    """/metrics on a port of its own, in a thread (and other exposition pages at their
    paths: `pages`); `port` is the bound one."""

    def __init__(
        self,
        port: int,
        reg: CollectorRegistry,
        host: str = "127.0.0.1",
        setting: str = "",
        pages: Pages | None = None,
    ) -> None:
        try:
            self._server = make_server(
                host, max(port, 0), _app(reg, pages or {}), ThreadingWSGIServer, _Quiet
            )
        except OSError as exc:
            hint = f": choose another with {setting}" if setting and exc.errno == EADDRINUSE else ""
            raise StartupError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}{hint}"
            ) from None
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(
    port: int, reg: CollectorRegistry, setting: str = "", pages: Pages | None = None
) -> MetricsServer | None:
    """Serve /metrics on `port` (ANY_PORT: a free one), and `pages` at their paths; 0 means
    off. `setting` names the option and variable to change when the port is taken."""
    return MetricsServer(port, reg, setting=setting, pages=pages) if port else None
