"""A Python call's settings checked by the command line's own options, so that a value is
accepted, converted and refused exactly as `python -m producer ...` would, with its message.

Each keyword becomes the option's text (`rate=0.5` -> `--rate 0.5`); keywords left at None
are not given, so the option's default applies. STREAM_* environment variables are not
read: a call says everything it means, whatever the notebook's environment holds.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click


class OptionError(ValueError):
    """A value the command line would refuse; the message is the command line's own line."""


def parse(command: click.Command, given: Mapping[str, Any]) -> click.Context:
    """A context holding the command's parameters parsed from `given` (parameter name ->
    value, None: not given); raise OptionError with the CLI's one-line message."""
    bare = click.Command(
        command.name,
        params=[_without_env(p) for p in command.params],
        add_help_option=False,
    )
    args: list[str] = []
    names = {p.name: p for p in command.params}
    for name, value in given.items():
        if value is None:
            continue
        param = names[name]
        flag = max(param.opts, key=len)  # the long form
        args += [flag, text(value)]
    try:
        return bare.make_context(command.name, args)
    except click.ClickException as exc:
        raise OptionError(message(exc)) from None


def message(exc: click.ClickException) -> str:
    """The one line `python -m <process>` prints after `<process>: error: `."""
    return " ".join(exc.format_message().split())


def _without_env(param: click.Parameter) -> click.Parameter:
    """The option as it is (its messages name its variable, as the CLI's do), but never
    reading the environment."""
    plain = copy.copy(param)
    plain.resolve_envvar_value = lambda ctx: None  # type: ignore[method-assign]
    plain.value_from_envvar = lambda ctx: None  # type: ignore[method-assign]
    return plain


def text(value: Any) -> str:
    """A Python value as the command line writes it: numbers as they are, a timedelta in
    seconds, a datetime in ISO form, a mapping as `key=value` pairs, a pair of durations as
    `MIN-MAX`."""
    if isinstance(value, bool):
        raise TypeError(f"expected a number or text, got {value!r}")
    if isinstance(value, timedelta):
        return repr(value.total_seconds())
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return ",".join(f"{k}={text(v)}" for k, v in value.items())
    if isinstance(value, tuple | list) and len(value) == 2:
        return f"{text(value[0])}-{text(value[1])}"
    if isinstance(value, Path):
        return str(value)
    return str(value)
