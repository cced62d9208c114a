"""Durations as people write them: one grammar for every option, the anomaly durations and
scenario files (docs/durations.md).

A duration is a number of seconds (`90`, `1.5`) or one or more parts, each a number and a
unit, `ms`, `s`, `m`, `h`, `d` or `w` (`500ms`, `90s`, `1h30m`, `2d 12h`); case and spaces
do not matter and there is no sign. The value is exact (a Fraction of seconds), so a
caller that wants milliseconds gets the same answer as one that wants seconds. Ranges
(how long at most, whether zero is allowed) are each caller's to check.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

SECONDS_PER_UNIT: dict[str, Fraction] = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86_400),
    "w": Fraction(7 * 86_400),
}
EXAMPLES = "90s, 30m, 1h30m or 7d"

_NUMBER = r"\d+(?:\.\d+)?"
_UNIT = "|".join(SECONDS_PER_UNIT)  # `ms` before `m` and `s`: the longest unit is read first
_PART = re.compile(rf"({_NUMBER})\s*({_UNIT})")
_PARTS = re.compile(rf"(?:{_NUMBER}\s*(?:{_UNIT})\s*)+")
_SECONDS = re.compile(_NUMBER)


def parse(value: str | int | float) -> Fraction:
    """The exact seconds of a duration: text in the grammar above, or a number of seconds
    (as a TOML file gives it). Raise ValueError, one line naming the value, for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if _SECONDS.fullmatch(text):
            return Fraction(text)
        if _PARTS.fullmatch(text):
            parts = (Fraction(n) * SECONDS_PER_UNIT[u] for n, u in _PART.findall(text))
            return sum(parts, Fraction(0))
    raise ValueError(f"{value!r} is not a duration like {EXAMPLES}")


def seconds(value: str | int | float) -> float:
    """A duration in seconds, the float nearest its exact value."""
    return float(parse(value))


def milliseconds(value: str | int | float) -> int:
    """A duration in whole milliseconds, rounded half to even."""
    return round(parse(value) * 1000)
