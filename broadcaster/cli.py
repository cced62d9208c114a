"""`python -m broadcaster`: the command line, which only builds a config and runs it."""

from __future__ import annotations

from pathlib import Path

import click

from broadcaster import service
from broadcaster.config import DEFAULT_RESUME_MAX, BroadcasterConfig
from broadcaster.latest import DEFAULT_MAX_DEVICES, SERIES_PER_DEVICE
from broadcaster.pages import scenario_title
from broadcaster.subscription import LABEL_POLICIES
from common.bus import DEFAULT_ALERTS, parse_endpoint
from common.cli import (
    catchup_from,
    log_level_option,
    metrics_port_option,
    option,
    producer_endpoints,
    producers_option,
    ready_file_option,
    security_from,
    security_options,
    serve,
    zmq_catchup_option,
    zmq_control_option,
    zmq_pub_option,
)
from common.logs import setup_logging


def _scenario(ctx: click.Context, param: click.Parameter, value: Path | None) -> str | None:
    """The scenario's name, for the dashboard; an unreadable file is a one-line error."""
    if value is None:
        return None
    try:
        return scenario_title(value)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@zmq_pub_option
@zmq_catchup_option
@zmq_control_option
@producers_option
@security_options
@option(
    "--ws-host",
    "STREAM_WS_HOST",
    default="localhost",
    help="Interface to listen on (localhost: this machine only).",
)
@option(
    "--ws-port",
    "STREAM_WS_PORT",
    default=8765,
    type=click.IntRange(0, 65535),
    help="WebSocket port (0 picks a free one and logs it).",
)
@option(
    "--reuse-port/--no-reuse-port",
    "STREAM_WS_REUSE_PORT",
    default=True,
    help="Share --ws-port with other broadcasters (SO_REUSEPORT): the kernel spreads new "
    "connections over all of them, e.g. `honcho start -c broadcaster=2`. Sharing needs "
    "an explicit port: with 0 each process gets a port of its own.",
)
@option(
    "--max-client-buffer",
    "STREAM_WS_MAX_BUFFER",
    default=4 * 1024 * 1024,
    type=click.IntRange(64 * 1024, 1024**3),
    help="Unsent bytes a client may hold up before it is disconnected (code 1008).",
)
@option(
    "--max-clients",
    "STREAM_WS_MAX_CLIENTS",
    default=10_000,
    type=click.IntRange(1, 1_000_000),
    help="Connections served at once; more are answered HTTP 503.",
)
@option(
    "--inbound-rate",
    "STREAM_WS_INBOUND_RATE",
    default=10.0,
    type=click.FloatRange(0.1, 10_000),
    help="Messages per second a client may send (bursts of 20) before it is closed (1008).",
)
@option(
    "--origins",
    "STREAM_WS_ORIGINS",
    default="",
    help="Comma list of allowed Origin headers, e.g. https://dash.example.com. [default: any]",
)
@option(
    "--token",
    "STREAM_WS_TOKEN",
    default=None,
    help="Token clients must send (?token=... or Authorization: Bearer ...) for the "
    "WebSocket, the dashboard and /metrics; /healthz stays open. [default: none]",
)
@option(
    "--tls-cert",
    "STREAM_WS_TLS_CERT",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM certificate (chain): serve wss:// instead of ws://.",
)
@option(
    "--tls-key",
    "STREAM_WS_TLS_KEY",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM private key for --tls-cert (if not in the same file).",
)
@option(
    "--stale-after",
    "STREAM_HEALTH_STALE",
    default=5.0,
    type=click.FloatRange(0.1, 86_400),
    help="Seconds without a sample before GET /healthz answers 503.",
)
@option(
    "--resume-max",
    "STREAM_WS_RESUME_MAX",
    default=DEFAULT_RESUME_MAX,
    type=click.IntRange(1, 10_000_000),
    help="Samples one resuming client (?since=) may be sent from the producers' history, "
    "and have held live meanwhile; older ones are named in a gap message.",
)
@option(
    "--scenario",
    "STREAM_SCENARIO",
    callback=_scenario,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The producers' scenario file: the dashboard shows its name.",
)
@option(
    "--labels",
    "STREAM_WS_LABELS",
    default="sent",
    type=click.Choice(LABEL_POLICIES),
    help="Label fields in the stream: sent (unless a client asks ?labels=0), blind (only to "
    "clients that ask ?labels=1, like the dashboard) or never (a blind stream for everyone).",
)
@option(
    "--alert-rate",
    "STREAM_WS_ALERT_RATE",
    default=1000.0,
    type=click.FloatRange(1, 1_000_000),
    help="Alerts per second a client may send (bursts of as many); more are refused and "
    "counted, ten times more closes it (1008).",
)
@option(
    "--zmq-alerts",
    "STREAM_ZMQ_ALERTS",
    default=DEFAULT_ALERTS,
    help="Where detectors' alerts go: the scorers' ZeroMQ endpoints (comma list; '' for none).",
)
@option(
    "--sample-metrics-devices",
    "STREAM_SAMPLE_METRICS_DEVICES",
    default=DEFAULT_MAX_DEVICES,
    type=click.IntRange(0, 100_000),
    help="Devices whose newest sample GET /metrics/samples shows as Prometheus gauges "
    f"({SERIES_PER_DEVICE} series each; the first seen; 0 turns the page off).",
)
@metrics_port_option("STREAM_BROADCASTER_METRICS_PORT")
@ready_file_option
@log_level_option
@click.pass_context
def main(
    ctx: click.Context,
    zmq_pub: str,
    zmq_catchup: str,
    zmq_control: str,
    producers: str,
    curve_dir: Path | None,
    allow_insecure: bool,
    ws_host: str,
    ws_port: int,
    reuse_port: bool,
    max_client_buffer: int,
    max_clients: int,
    inbound_rate: float,
    origins: str,
    token: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    stale_after: float,
    resume_max: int,
    scenario: str | None,
    labels: str,
    alert_rate: float,
    zmq_alerts: str,
    sample_metrics_devices: int,
    metrics_port: int,
    ready_file: str | None,
    log_level: str,
) -> None:
    """Relay every sample as JSON to every connected WebSocket client."""
    try:
        for endpoint in [e.strip() for e in zmq_alerts.split(",") if e.strip()]:
            parse_endpoint(endpoint)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--zmq-alerts'") from None
    if tls_key and not tls_cert:
        raise click.BadParameter("--tls-key needs --tls-cert", param_hint="'--tls-key'")
    setup_logging(log_level)
    config = BroadcasterConfig(
        zmq_pub=",".join(producer_endpoints(zmq_pub, producers)),
        zmq_catchup=",".join(producer_endpoints(catchup_from(ctx, zmq_catchup), producers)),
        zmq_control=",".join(producer_endpoints(zmq_control, producers)),
        security=security_from(curve_dir, allow_insecure),
        ws_host=ws_host,
        ws_port=ws_port,
        reuse_port=reuse_port,
        max_client_buffer=max_client_buffer,
        max_clients=max_clients,
        inbound_rate=inbound_rate,
        origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
        token=token or None,
        tls_cert=tls_cert,
        tls_key=tls_key,
        stale_after=stale_after,
        resume_max=resume_max,
        metrics_port=metrics_port,
        ready_file=ready_file,
        scenario=scenario,
        labels=labels,
        alert_rate=alert_rate,
        zmq_alerts=zmq_alerts,
        sample_metrics_devices=sample_metrics_devices,
    )
    serve(service.run, config)
