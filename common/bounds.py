"""Numbers from JSON requests (subscriptions, control commands), checked against a range."""

from __future__ import annotations

from typing import Any


def number_in(
    value: Any, name: str, low: float, high: float, error: type[Exception], kind: type = float
) -> Any:
    """`value` as `kind` if it is one within [low, high]; else `error` naming it and the range."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise error(f"{name} must be a number, got {value!r}") from None
    if not low <= number <= high:
        raise error(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return number
