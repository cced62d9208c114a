"""The documentation's recipes run as written.

A fenced code block (`bash` or `python`) right after a line `<!-- recipe -->` in README.md
or docs/*.md is run, as it stands, in a directory that holds what the documentation
assumes: a `.env` configuring a running pipeline (producer, logger, broadcaster, on
endpoints of the test's own), a backfill `data/train.csv` of `scenarios/db-outage.toml`
with its windows and its Parquet twin, and the repository's `scenarios/` and `clients/`.
`<!-- recipe expects "TEXT" -->` also requires TEXT in what the block prints.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, ready_info, wait_until

MARK = re.compile(r"^<!--\s*recipe\b(?P<args>.*?)-->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w+)?\s*$")
RUNNERS = {"bash": ["bash", "-e", "-c"], "python": [sys.executable, "-c"]}


@dataclass(frozen=True)
class Recipe:
    where: str  # file:line of the marker
    lang: str
    code: str
    expects: tuple[str, ...]


def recipes(paths: list[Path]) -> list[Recipe]:
    """Every marked block of these Markdown files; a mark not followed by a runnable block
    is an error in the documentation, reported as a recipe that fails."""
    found = []
    for path in paths:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            mark = MARK.match(line)
            if not mark:
                continue
            where = f"{path.relative_to(REPO)}:{number}"
            expects = tuple(re.findall(r'expects\s+"([^"]*)"', mark["args"]))
            start = number  # the fence must follow, blank lines allowed
            while start < len(lines) and not lines[start].strip():
                start += 1
            fence = FENCE.match(lines[start]) if start < len(lines) else None
            if fence is None or fence["lang"] not in RUNNERS:
                found.append(Recipe(where, "", "", expects))
                continue
            end = start + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            found.append(Recipe(where, fence["lang"], "\n".join(lines[start + 1 : end]), expects))
    return found


DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RECIPES = recipes(DOCUMENTS)


def clean_env() -> dict[str, str]:
    """The test's environment without STREAM_* or honcho settings: only `.env` configures."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    for name in [k for k in env if k.startswith("STREAM_") or k == "HONCHO_PROCESS_NAME"]:
        del env[name]
    return env


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Iterator[Path]:
    """A directory as the documentation assumes it, with a pipeline running in it."""
    cwd = tmp_path_factory.mktemp("recipes")
    for name in ("scenarios", "clients"):
        (cwd / name).symlink_to(REPO / name)
    (cwd / ".env").write_text(
        f"STREAM_ZMQ_PUB=ipc://{cwd}/samples.sock\n"
        f"STREAM_ZMQ_CATCHUP=ipc://{cwd}/catchup.sock\n"
        f"STREAM_ZMQ_CONTROL=ipc://{cwd}/control.sock\n"
        f"STREAM_READY_FILE={cwd}/run/{{instance}}.json\n"
        "STREAM_WS_PORT=0\nSTREAM_RATE=5\nSTREAM_ANOMALY_RATE=60\n"
        "STREAM_FLUSH_INTERVAL=0.2\nSTREAM_SPEED=20\n"
    )
    backfill = ["-m", "producer", "generate", "--no-progress", "--scenario"]
    backfill += ["scenarios/db-outage.toml", "--start", "2025-08-04", "--duration", "2h"]
    backfill += ["--seed", "42", "--rate", "1"]
    env = clean_env()
    for out in ("data/train.csv", "data/train.parquet"):
        subprocess.run(
            [sys.executable, *backfill, "--out", out],
            cwd=cwd,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for module in ("producer", "logger", "broadcaster")
    ]
    try:
        names = ("producer", "logger", "broadcaster")
        wait_until(
            lambda: all(ready_info(cwd / "run" / f"{name}.json") for name in names),
            timeout=20,
            message="the recipes' pipeline did not start",
        )
        log = cwd / "data" / "stream_log.windows.csv"
        wait_until(lambda: log.exists() and len(log.read_text().splitlines()) > 1, timeout=30)
        yield cwd
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(cwd / "run", ignore_errors=True)


def test_the_documentation_has_recipes():
    """The recipes this test runs are there: the README's and the reference pages' at least."""
    places = {r.where.split(":")[0] for r in RECIPES}
    assert "README.md" in places and len(RECIPES) >= 8, [r.where for r in RECIPES]


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.where for r in RECIPES])
def test_recipe_runs_as_written(place: Path, recipe: Recipe):
    """The block runs without error (status 0) and prints what the mark expects."""
    assert recipe.lang, f"{recipe.where}: a recipe mark must precede a bash or python block"
    result = subprocess.run(
        [*RUNNERS[recipe.lang], recipe.code],
        cwd=place,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    shown = result.stdout + result.stderr
    assert result.returncode == 0, f"{recipe.where}:\n{recipe.code}\n---\n{shown}"
    assert "Traceback" not in shown, shown
    for text in recipe.expects:
        assert text in shown, f"{recipe.where}: {text!r} not in:\n{shown}"
