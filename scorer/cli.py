"""`python -m scorer` (live) and `python -m scorer score` (from files): the command line,
which only builds a config or settings and runs them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

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
    zmq_pub_option,
)
from common.logs import setup_logging
from scorer.settings import BIASES, CARDINALITIES, Settings


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that decide how alerts are judged, live and offline alike."""
    for decorator in reversed(
        [
            option("--early", "STREAM_SCORER_EARLY", default=0.0, type=click.FloatRange(0, 86_400),
                   help="Seconds before an event's first sample that an alert still detects it."),
            option("--late", "STREAM_SCORER_LATE", default=5.0, type=click.FloatRange(0, 86_400),
                   help="Seconds after an event's last sample that an alert still detects it."),
            option("--threshold", "STREAM_SCORER_THRESHOLD", type=float, default=None,
                   help="Ignore alerts whose score is below this (alerts without a score "
                   "count). [default: all count]"),
            option("--nab-threshold", "STREAM_SCORER_NAB_THRESHOLD", multiple=True,
                   callback=lambda ctx, param, value: _profile_thresholds(value),
                   help="PROFILE=VALUE: score this NAB profile at its own threshold (NAB "
                   "publishes each profile's results at its own); repeatable."),
            option("--nab-probation", "STREAM_SCORER_NAB_PROBATION", default=0.15,
                   type=click.FloatRange(0, 1, max_open=True),
                   help="NAB's probationary share of each device's rows (at most 750 rows), "
                   "not scored by NAB."),
            option("--range-alpha", "STREAM_SCORER_RANGE_ALPHA", default=0.0,
                   type=click.FloatRange(0, 1),
                   help="Range-based recall: the weight of detecting a range at all."),
            option("--range-bias", "STREAM_SCORER_RANGE_BIAS", default="flat",
                   type=click.Choice(BIASES), help="Range-based: which positions weigh more."),
            option("--range-cardinality", "STREAM_SCORER_RANGE_CARDINALITY", default="one",
                   type=click.Choice(CARDINALITIES),
                   help="Range-based: a range overlapping x others counts 1 or 1/x."),
        ]
    ):
        func = decorator(func)
    return func


def settings_from(options: dict[str, Any]) -> Settings:
    return Settings(
        early_s=options.pop("early"),
        late_s=options.pop("late"),
        threshold=options.pop("threshold"),
        nab_probation=options.pop("nab_probation"),
        nab_thresholds=options.pop("nab_threshold"),
        range_alpha=options.pop("range_alpha"),
        range_bias=options.pop("range_bias"),
        range_cardinality=options.pop("range_cardinality"),
    )


def _profile_thresholds(values: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    out = []
    for value in values:
        profile, _, number = str(value).partition("=")
        try:
            out.append((profile.strip(), float(number)))
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected PROFILE=VALUE") from None
    return tuple(out)


def _table_mode(value: str) -> bool:
    text = str(value).strip().lower()
    if text == "auto":
        return sys.stdout.isatty()
    if text in ("on", "1", "yes"):
        return True
    if text in ("off", "0", "no"):
        return False
    raise click.BadParameter(f"{value!r}: expected auto, on or off")


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@zmq_pub_option
@zmq_catchup_option
@producers_option
@security_options
@option("--zmq-alerts", "STREAM_ZMQ_ALERTS", default=DEFAULT_ALERTS,
        help="ZeroMQ endpoint the scorer binds and broadcasters send detectors' alerts to "
        "(a comma list: the first is bound).")
@option("--report", "STREAM_SCORER_REPORT", default="data/scorer_report.json",
        type=click.Path(dir_okay=False, path_type=Path),
        help="JSON report written when the scorer stops, and on SIGUSR1.")
@option("--picture", "STREAM_SCORER_PICTURE", default="data/scorer_report.png",
        help="PNG picture of the report, written with it ('' for none).")
@option("--table", "STREAM_SCORER_TABLE", default="auto",
        callback=lambda ctx, param, value: _table_mode(value),
        help="Redraw the scores as a table on stdout: auto (when it is a terminal), on, off.")
@option("--every", "STREAM_SCORER_EVERY", default=5.0, type=click.FloatRange(0.5, 3600),
        help="Seconds between refreshes of the table and of /metrics' scores.")
@option("--max-alerts", "STREAM_SCORER_MAX_ALERTS", default=10_000_000,
        type=click.IntRange(1, 1_000_000_000),
        help="Alerts kept per run; later ones are counted as dropped.")
@settings_options
@metrics_port_option("STREAM_SCORER_METRICS_PORT")
@ready_file_option
@log_level_option
@click.pass_context
def main(ctx: click.Context, **options: Any) -> None:
    """Score detectors' alerts live against the labelled samples of the stream."""
    if ctx.invoked_subcommand is not None:
        return
    from scorer import service
    from scorer.config import ScorerConfig

    alerts = options["zmq_alerts"].split(",")[0].strip()
    try:
        parse_endpoint(alerts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--zmq-alerts'") from None
    setup_logging(options.pop("log_level"))
    settings = settings_from(options)
    config = ScorerConfig(
        zmq_pub=",".join(producer_endpoints(options["zmq_pub"], options["producers"])),
        zmq_catchup=",".join(
            producer_endpoints(catchup_from(ctx, options["zmq_catchup"]), options["producers"])
        ),
        zmq_alerts=alerts,
        security=security_from(options["curve_dir"], options["allow_insecure"]),
        settings=settings,
        report=options["report"],
        picture=Path(options["picture"]) if options["picture"] else None,
        table=options["table"],
        every=options["every"],
        max_alerts=options["max_alerts"],
        metrics_port=options["metrics_port"],
        ready_file=options["ready_file"],
    )
    serve(service.run, config)


@main.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--windows", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Our windows file (data/stream_log.windows.csv) or NAB's combined_windows.json.")
@click.option("--series", type=click.Path(dir_okay=False, path_type=Path),
              help="The samples the windows label: our log or backfill (default: the one "
              "beside the windows file), or a NAB data file (default: the results file).")
@click.option("--alerts", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Alerts: CSV or JSON lines (device, seq or timestamp, score, kind, "
              "detector), or a NAB results file (timestamp, anomaly_score) with --threshold.")
@click.option("--detector", default=None, help="The detector's name [default: the alerts "
              "file's detector column, or its name]")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON report here.")
@click.option("--picture", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the report's picture here (PNG).")
@settings_options
def score(windows: Path, series: Path | None, alerts: Path, detector: str | None, as_json: bool,
          report: Path | None, picture: Path | None, **options: Any) -> None:
    """Score an alerts file against a windows file, as the live scorer would."""
    from scorer.offline import score_files

    try:
        settings = settings_from(options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    result = score_files(windows, alerts, series, settings, detector)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(result.to_json(indent=1) + "\n")
    if picture is not None:
        from scorer.picture import draw

        draw([result], picture)
    if as_json:
        click.echo(result.to_json())
    else:
        from scorer.table import render

        click.echo(render(result))
