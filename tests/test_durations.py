"""Durations: one grammar (common.durations) read alike by the options, the anomaly durations
and scenario files, every form any of them took before still taken, with the same value."""

from __future__ import annotations

from fractions import Fraction

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from common import durations
from common.cli import duration
from producer.model.anomalies import parse_durations
from producer.model.scenario import ScenarioError, parse

# (text, exact seconds, who took it before this grammar: c the options (common/cli.py),
# a the anomaly durations (producer/model/anomalies.py), s scenario files (their strings)).
# Each now takes all of them, within its own bounds.
FORMS = [
    ("90", 90, "ca"),
    ("1.5", Fraction(3, 2), "ca"),
    ("0", 0, "ca"),
    ("90s", 90, "cas"),
    ("500ms", Fraction(1, 2), "cas"),
    ("30m", 1800, "cas"),
    ("12h", 43_200, "cas"),
    ("1.5h", 5400, "cas"),
    ("0.1h", 360, "cas"),
    ("2.25m", 135, "cas"),
    (" 90 s ", 90, "cas"),
    ("7d", 604_800, "cs"),
    ("2w", 1_209_600, "cs"),
    ("5M", 300, "as"),  # upper case: the anomaly durations and scenario files lowered it
    ("1h30m", 5400, "s"),
    ("1h 30m", 5400, "s"),
    ("1m30s500ms", Fraction(181, 2), "s"),
    ("2d12h", 216_000, "s"),
    ("\u0663s", 3, "cas"),  # an Arabic-Indic 3: \d and float() took it
]
NOT_DURATIONS = ["", " ", "4 minutes", "-5", "-5s", "1h30", ".5s", "5.", "1e3", "inf", "nan",
                 "5m s", "1,5s", "1 hour", "s", "90x", "+5s"]  # fmt: skip


@pytest.mark.parametrize(("text", "exact", "before"), FORMS, ids=[f[0] for f in FORMS])
def test_each_form_has_one_exact_value(text, exact, before):
    """A form's value is exact, so seconds and milliseconds agree (0.1h is 360 s, 360,000 ms)."""
    assert durations.parse(text) == exact
    assert durations.seconds(text) == float(Fraction(exact))
    assert durations.milliseconds(text) == round(Fraction(exact) * 1000)


def test_numbers_are_seconds():
    """A number (as a TOML file gives it) is seconds, like the same number as text."""
    assert durations.parse(90) == 90 and durations.parse(1.5) == Fraction(3, 2)
    assert durations.milliseconds(0.001) == 1
    for bad in (-1, -0.5, float("inf"), float("nan"), True, None, [90]):
        with pytest.raises(ValueError, match="is not a duration like 90s, 30m, 1h30m or 7d"):
            durations.parse(bad)


@pytest.mark.parametrize("text", NOT_DURATIONS)
def test_what_is_not_a_duration_is_refused_with_one_line(text):
    """Anything outside the grammar is a ValueError that names the value and shows forms."""
    with pytest.raises(ValueError) as error:
        durations.parse(text)
    assert str(error.value) == f"{text!r} is not a duration like 90s, 30m, 1h30m or 7d"


_NUMBERS = st.builds(
    lambda whole, fraction: f"{whole}.{fraction}" if fraction else str(whole),
    st.integers(0, 10_000),
    st.one_of(st.none(), st.from_regex(r"[0-9]{1,4}", fullmatch=True)),
)
_PARTS = st.lists(
    st.tuples(_NUMBERS, st.sampled_from(list(durations.SECONDS_PER_UNIT)), st.booleans()),
    min_size=1,
    max_size=4,
)


@given(_PARTS, st.sampled_from(["", " ", "  "]))
def test_parts_add_up_exactly_whatever_the_case_and_spaces(parts, space):
    """Any run of NUMBER UNIT parts is the exact sum of its parts, in any case, spaced or not."""
    text = space.join(
        f"{number}{space}{unit.upper() if upper else unit}" for number, unit, upper in parts
    )
    exact = sum(Fraction(n) * durations.SECONDS_PER_UNIT[u] for n, u, _ in parts)
    assert durations.parse(f"{space}{text}{space}") == exact


@click.command()
@click.option("--every", callback=duration)
def _command(every: float) -> None:
    click.echo(repr(every))


def test_options_take_every_form():
    """A duration option (logger --rotate-every, bridge --max-age, producer --duration) reads
    every form as seconds and refuses the rest with a usage error naming the value."""
    runner = CliRunner()
    for text, exact, _ in FORMS:
        result = runner.invoke(_command, ["--every", text])
        assert result.exit_code == 0, (text, result.output)
        assert result.output == f"{float(Fraction(exact))!r}\n", text
    result = runner.invoke(_command, ["--every", "4 minutes"])
    assert result.exit_code == 2 and "'4 minutes' is not a duration like" in result.output


def test_anomaly_durations_take_every_form_within_six_hours():
    """`--anomaly-duration KIND=MIN-MAX` reads each bound with the same grammar; above zero
    and at most 6 h."""
    taken = [(text, exact) for text, exact, _ in FORMS if 0 < exact <= 6 * 3600]
    assert len(taken) >= 12
    for text, exact in taken:
        seconds = float(Fraction(exact))
        assert parse_durations(f"drift={text}") == {"drift": (seconds, seconds)}, text
        assert parse_durations(f"drift={text}-6h") == {"drift": (seconds, 21_600.0)}, text
    assert parse_durations("spike=1-10,drift=5m-20m") == {
        "spike": (1.0, 10.0),
        "drift": (300.0, 1200.0),
    }
    with pytest.raises(ValueError, match="duration of spike must be within 0..6h"):
        parse_durations("spike=1d")
    with pytest.raises(ValueError, match="'spike=0-1s' is not|duration of spike must be"):
        parse_durations("spike=0-1s")
    with pytest.raises(ValueError, match="'drift=5 minutes' is not a duration range"):
        parse_durations("drift=5 minutes")


FLEET = '[[group]]\nrole = "web"\ncount = 2\nid = "web-{n:02d}"\n'


def _deploy(at: str, duration: str) -> str:
    return FLEET + f'[[deploy]]\ngroup = "web"\nat = {at}\nduration = {duration}\n'


def test_scenario_files_take_every_form_within_seven_days():
    """A scenario's durations and `+` times read the same grammar: strings, or TOML numbers
    of seconds; a duration is above zero and at most 7 days."""
    taken = [(text, exact) for text, exact, _ in FORMS if 0 < exact <= 7 * 86_400]
    assert len(taken) >= 15
    for text, exact in taken:
        ms = round(Fraction(exact) * 1000)
        (deploy,) = parse(_deploy(f'"+{text}"', f'"{text}"')).planned
        assert (deploy.duration_ms, deploy.at.offset_ms) == (ms, ms), text
    (deploy,) = parse(_deploy('"+1h"', "90")).planned
    assert deploy.duration_ms == 90_000
    (deploy,) = parse(_deploy('"+1h"', "1.5")).planned
    assert deploy.duration_ms == 1500


@pytest.mark.parametrize("value", ['"4 minutes"', '"2w"', "inf", "nan", "-5", '"0s"', "true"])
def test_scenario_durations_out_of_grammar_or_bounds_are_one_line(value):
    """A duration outside the grammar or the bounds is one line naming the file, line and key
    (TOML inf and nan once raised a traceback from the rounding)."""
    with pytest.raises(ScenarioError) as error:
        parse(_deploy('"+1h"', value), "x.toml")
    message = str(error.value)
    assert message.startswith("x.toml line 8: deploy[0].duration: must be a duration like 90s")
    assert "\n" not in message
