"""Prometheus metrics, read from the processes' own counters when scraped.

Each process hands over a function returning its figures; nothing is counted twice and
the hot paths stay free of metric calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from errno import EADDRINUSE

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from common.errors import StartupError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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


class MetricsServer:
    """/metrics on a port of its own (producer and logger), in a thread; `port` is the bound one."""

    def __init__(
        self, port: int, reg: CollectorRegistry, host: str = "127.0.0.1", setting: str = ""
    ) -> None:
        try:
            self._server, self._thread = start_http_server(max(port, 0), addr=host, registry=reg)
        except OSError as exc:
            hint = f": choose another with {setting}" if setting and exc.errno == EADDRINUSE else ""
            raise StartupError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}{hint}"
            ) from None
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(port: int, reg: CollectorRegistry, setting: str = "") -> MetricsServer | None:
    """Serve /metrics on `port` (ANY_PORT: a free one); 0 means off. `setting` names the
    option and variable to change when the port is taken."""
    return MetricsServer(port, reg, setting=setting) if port else None
