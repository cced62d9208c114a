"""Shared command-line plumbing: options every process takes and one-line errors.

Each setting is a click option with a `STREAM_*` environment-variable fallback, so a
`.env` file configures `honcho start`. Errors never show a traceback: a bad option
exits with status 2, a start-up failure (port in use, unwritable file) with status 3.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from common.bus import Security, parse_endpoint
from common.errors import StartupError
from common.logs import LEVELS

DEFAULT_ZMQ_PUB = "tcp://127.0.0.1:5556"
DEFAULT_ZMQ_REPLAY = "tcp://127.0.0.1:5557"
DEFAULT_ZMQ_CONTROL = "tcp://127.0.0.1:5558"


def _check_endpoint(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_endpoint(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def zmq_pub_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--zmq-pub",
        envvar="STREAM_ZMQ_PUB",
        default=DEFAULT_ZMQ_PUB,
        show_default=True,
        show_envvar=True,
        callback=_check_endpoint,
        help="ZeroMQ endpoint the producer binds and the logger and broadcaster connect to.",
    )(func)


def zmq_replay_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--zmq-replay",
        envvar="STREAM_ZMQ_REPLAY",
        default=DEFAULT_ZMQ_REPLAY,
        show_default=True,
        show_envvar=True,
        callback=_check_endpoint,
        help="ZeroMQ endpoint where the producer answers requests for missed samples.",
    )(func)


def zmq_control_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--zmq-control",
        envvar="STREAM_ZMQ_CONTROL",
        default=DEFAULT_ZMQ_CONTROL,
        show_default=True,
        show_envvar=True,
        callback=_check_endpoint,
        help="ZeroMQ endpoint where the producer takes control commands (python -m producer ctl).",
    )(func)


def security_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--curve-dir and --allow-insecure; turn them into a Security with `security_from`."""
    func = click.option(
        "--allow-insecure",
        envvar="STREAM_ZMQ_ALLOW_INSECURE",
        is_flag=True,
        show_envvar=True,
        help="Allow binding ZeroMQ beyond this machine without CURVE encryption.",
    )(func)
    return click.option(
        "--curve-dir",
        envvar="STREAM_ZMQ_CURVE_DIR",
        show_envvar=True,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        help="Keys directory ('python -m producer keys'): encrypt and authenticate ZeroMQ.",
    )(func)


def security_from(curve_dir: Path | None, allow_insecure: bool) -> Security:
    return Security(curve_dir=curve_dir, allow_insecure=allow_insecure)


def log_level_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--log-level",
        envvar="STREAM_LOG_LEVEL",
        default="INFO",
        show_default=True,
        show_envvar=True,
        type=click.Choice(LEVELS, case_sensitive=False),
        help="Logging threshold.",
    )(func)


_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """A click callback: `90s`, `30m`, `12h`, `7d`, `2w` (or plain seconds) as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", str(value))
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration like 90s, 30m, 12h or 7d")
    return float(match[1]) * _UNITS_S[match[2] or "s"]


def fail(prog: str, message: str, status: int) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(status)


def main(command: click.Command, prog: str) -> NoReturn:
    """Run a click command the way every process's `__main__` does."""
    try:
        # Without standalone mode, click returns (not raises) the status of Exit(n).
        status = command.main(prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        fail(prog, " ".join(exc.format_message().split()), exc.exit_code)
    except StartupError as exc:
        fail(prog, str(exc), 3)
    sys.exit(status if isinstance(status, int) else 0)
