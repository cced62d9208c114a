"""The README and the docs/ pages: links that work, a settings page that names every option of
every command and every STREAM_* variable, and a README short enough to be a front door.

Settings are checked against what the real commands print for `--help`, so an option added to
the code without a row in docs/settings.md fails here, naming the option and its command.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
SETTINGS = DOCS / "settings.md"
DEVELOPMENT = DOCS / "development.md"
README_LIMIT = 15_000

# Scripts users run by path (processes are found by their __main__.py).
SCRIPTS = ["clients/test_client.py"]
# Folders whose code is not the product's (their STREAM_* reads are checked more narrowly).
NOT_PRODUCT = {"tests", "bench", "docs", "data", "node_modules"}
ENV_READ = re.compile(
    r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](STREAM_[A-Z0-9_]*[A-Z0-9])"""
)
ENV_NAME = re.compile(r"\bSTREAM_[A-Z0-9_]*[A-Z0-9]\b")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# --- Markdown, as GitHub reads it ------------------------------------------------------------


def prose(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    fence = ""
    for number, line in enumerate(text.splitlines(), 1):
        marker = re.match(r"^ {0,3}(`{3,}|~{3,})", line)
        if fence:
            if marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
                fence = ""
            continue
        if marker:
            fence = marker.group(1)
            continue
        yield number, line


def without_code_spans(line: str) -> str:
    return re.sub(r"(`+)(.+?)\1", "", line)


def heading_text(markdown: str) -> str:
    """The text GitHub renders for a heading's markdown (links, code, emphasis, HTML undone)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(`+)(.+?)\1", r"\2", text)
    return text.replace("*", "").strip()


def slug(text: str) -> str:
    """GitHub's anchor for a heading's rendered text: lowercase, punctuation other than - and _
    dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def headings(path: Path) -> list[tuple[int, int, str]]:
    """(line number, level, rendered text) of every ATX heading of a page."""
    found = []
    for number, line in prose(path.read_text(encoding="utf-8")):
        match = re.match(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$", line)
        if match:
            found.append((number, len(match.group(1)), heading_text(match.group(2))))
    return found


def anchors(path: Path) -> list[str]:
    """Every anchor of a page, repeats numbered -1, -2, ... as GitHub does."""
    seen: dict[str, int] = {}
    result = []
    for _, _, text in headings(path):
        base = slug(text)
        anchor = base if base not in seen else f"{base}-{seen[base]}"
        seen[base] = seen.get(base, 0) + 1
        result.append(anchor)
    return result


LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""")


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link and image outside code."""
    for number, line in prose(path.read_text(encoding="utf-8")):
        line = without_code_spans(line)
        for pattern in (LINK, REFERENCE, HTML_LINK):
            for match in pattern.finditer(line):
                yield number, match.group(1)


def link_problem(page: Path, target: str) -> str | None:
    """What is wrong with a link from a page, or None (links off the repository are not checked)."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//", target):
        return None
    path_part, _, anchor = target.partition("#")
    linked = (page.parent / path_part).resolve() if path_part else page
    if not linked.is_relative_to(REPO):
        return f"{target}: outside the repository"
    if not linked.exists():
        return f"{target}: no file {rel(linked)}"
    if anchor and linked.suffix == ".md":
        known = anchors(linked)
        if anchor not in known:
            near = difflib.get_close_matches(anchor, known, n=3)
            hint = f" (did you mean {', '.join('#' + a for a in near)}?)" if near else ""
            return f"{target}: no heading with anchor #{anchor} in {rel(linked)}{hint}"
    return None


def test_every_link_and_anchor_resolves() -> None:
    """Every relative link of README.md and docs/*.md names an existing file, and every #anchor
    a heading of the page it points to."""
    problems = [
        f"{rel(page)} line {number}: {problem}"
        for page in pages()
        for number, target in links(page)
        if (problem := link_problem(page, target))
    ]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_page_is_linked_from_the_readme() -> None:
    """Each docs/*.md page can be found from the front door."""
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for _, target in links(README)
        if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)
    }
    orphans = [rel(page) for page in pages()[1:] if page.resolve() not in linked]
    assert not orphans, f"pages not linked from README.md: {', '.join(orphans)}"


def test_readme_is_a_front_door() -> None:
    """The README stays short: the reference lives in docs/."""
    size = README.stat().st_size
    assert size < README_LIMIT, (
        f"README.md is {size:,} bytes, over {README_LIMIT:,}: move reference text to docs/"
    )


def test_slugs_follow_github() -> None:
    """The anchor rules the link check relies on, on headings of the kinds these pages use."""
    assert slug(heading_text("`python -m producer generate`")) == "python--m-producer-generate"
    assert slug(heading_text("`python clients/test_client.py`")) == "python-clientstest_clientpy"
    assert slug(heading_text("Backfill: a training set in seconds")) == (
        "backfill-a-training-set-in-seconds"
    )
    assert slug(heading_text("Acknowledgements, nothing lost or doubled")) == (
        "acknowledgements-nothing-lost-or-doubled"
    )
    linked = heading_text("[Settings](settings.md) — *all* of them")
    assert slug(linked) == "settings--all-of-them"


# --- Paths: every repository file the pages name exists ----------------------------------------


def ignored_patterns() -> list[str]:
    lines = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .gitignore keeps `path` (repository-relative) out of the tree: a file the
    pipeline makes at run time (`data/...`, `bench/results/`, fetched jars), never committed."""
    parts = path.strip("/").split("/")
    for pattern in patterns:
        folder = pattern.endswith("/")
        name = pattern.rstrip("/")
        if "/" in name:  # anchored at the root: a prefix of the path
            if path.strip("/") == name or path.startswith(name + "/"):
                return True
        elif any(fnmatch.fnmatch(part, name) for part in (parts[:-1] if folder else parts)):
            return True
        elif folder and path.endswith("/") and fnmatch.fnmatch(parts[-1], name):
            return True
    return False


def top_folders() -> set[str]:
    """The repository's own top-level folders (not those made at run time, like data/)."""
    patterns = ignored_patterns()
    return {
        entry.name
        for entry in REPO.iterdir()
        if entry.is_dir() and entry.name != ".git" and not is_ignored(entry.name + "/", patterns)
    }


PATH_TOKEN = re.compile(r"[\w.*/{}<>-]+")


def code_text(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every code span and every line of a fenced code block."""
    text = path.read_text(encoding="utf-8")
    outside = dict(prose(text))
    for number, line in enumerate(text.splitlines(), 1):
        if number not in outside:
            yield number, line
        else:
            for match in re.finditer(r"(`+)(.+?)\1", line):
                yield number, match.group(2)


def named_paths(path: Path, folders: set[str]) -> Iterator[tuple[int, str]]:
    """(line number, path) of every repository path written in code on a page: a word that
    begins with one of the repository's top-level folders (`producer/model/scenario.py`,
    `bench/`); words holding a placeholder (`{instance}`, `<name>`) are not paths."""
    for number, text in code_text(path):
        for word in PATH_TOKEN.findall(text):
            word = word.rstrip(".,")
            if "/" not in word or any(mark in word for mark in "{}<>"):
                continue
            if word.split("/", 1)[0] in folders:
                yield number, word


def test_every_repository_path_the_pages_name_exists() -> None:
    """A file or folder of the repository named in code on any page (in backticks, or in a
    command or the layout) exists, or is one .gitignore says the pipeline makes; a pattern
    (`docs/*.md`) matches something. So a moved or deleted module cannot stay named."""
    folders = top_folders()
    patterns = ignored_patterns()
    problems = []
    for page in pages():
        for number, word in named_paths(page, folders):
            if "*" in word:
                found = any(REPO.glob(word.rstrip("/")))
            else:
                found = (REPO / word).exists() or is_ignored(word, patterns)
            if not found:
                problems.append(f"{rel(page)} line {number}: {word} does not exist")
    assert not problems, "paths that are not in the repository:\n" + "\n".join(problems)


def test_path_check_reads_paths_as_meant() -> None:
    """The path check finds paths in code and commands, leaves URLs and placeholders alone,
    and knows the files the pipeline makes from the repository's own."""
    patterns = ignored_patterns()
    assert is_ignored("data/stream_log.csv", patterns)
    assert is_ignored("brokers/kafka/lib/", patterns)
    assert not is_ignored("producer/model/scenario.py", patterns)
    folders = top_folders()
    assert {"producer", "docs", "tests"} <= folders and "data" not in folders
    words = [
        word
        for word in PATH_TOKEN.findall(
            "python bench/x.py tcp://127.0.0.1:5556 data/{instance}.gaps.csv samples/<device>"
        )
        if "/" in word and not any(mark in word for mark in "{}<>")
    ]
    assert [w for w in words if w.split("/", 1)[0] in folders] == ["bench/x.py"]


# --- The source layout: every module named, none that is gone -----------------------------------


def layout_block() -> list[str]:
    """The lines of the fenced block under docs/development.md's Layout heading."""
    lines = sections(DEVELOPMENT)["Layout"]
    start = next(i for i, line in enumerate(lines) if line.startswith("```"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    return lines[start + 1 : end]


LAYOUT_FILE = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.(?:py|html|xml|properties|toml))\b")


def layout_entries() -> tuple[set[str], set[str]]:
    """(top-level folders, files) the layout names; a file is named in its folder's lines
    (`common/` then `schema.py`, a subfolder `  model/` then `workload.py`)."""
    folders: set[str] = set()
    files: set[str] = set()
    top = here = ""
    for line in layout_block():
        if match := re.match(r"^([\w.-]+/)\s", line):
            top = here = match.group(1)
            folders.add(top.rstrip("/"))
            line = line[match.end() :]
        elif match := re.match(r"^  ([\w.-]+/)\s", line):
            here = top + match.group(1)
            line = line[match.end() :]
        files.update(here + name for name in LAYOUT_FILE.findall(line))
    return folders, files


def test_the_layout_names_every_module() -> None:
    """docs/development.md's layout lists every top-level folder holding code and every
    module in it (tests/ aside: "pytest suite"), and names no file that does not exist."""
    folders, files = layout_entries()
    patterns = ignored_patterns()
    code_folders = {
        folder
        for folder in top_folders()
        if not folder.startswith(".") and any((REPO / folder).rglob("*.py"))
    }
    unlisted_folders = sorted(code_folders - folders)
    modules = {
        rel(path)
        for folder in folders - {"tests"}
        for path in (REPO / folder).rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and not is_ignored(rel(path), patterns)
    }
    missing = sorted(modules - files)
    gone = sorted(name for name in files if not (REPO / name).exists())
    assert not (unlisted_folders or missing or gone), (
        f"{rel(DEVELOPMENT)} Layout:\n"
        + "".join(f"  folder not listed: {name}/\n" for name in unlisted_folders)
        + "".join(f"  module not listed: {name}\n" for name in missing)
        + "".join(f"  listed, does not exist: {name}\n" for name in gone)
    )


# --- Settings: every option of every command ------------------------------------------------


@dataclass
class Option:
    flags: list[str]
    envvars: list[str]


@dataclass
class Command:
    name: str  # as a user types it: python -m producer ctl inject
    argv: list[str]
    options: list[Option] = field(default_factory=list)
    subcommands: list[str] = field(default_factory=list)


def parse_help(text: str) -> tuple[list[Option], list[str]]:
    """The options (flags and env vars) and subcommand names of a click --help page."""
    options: list[Option] = []
    subcommands: list[str] = []
    section = ""
    entry: list[str] = []

    def close() -> None:
        if entry:
            column = re.split(r"\s{2,}", entry[0].strip(), maxsplit=1)[0]
            flags = re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", column)
            joined = " ".join(" ".join(entry).split())
            env = re.search(r"env var:\s*([A-Z0-9_]+(?:,\s*[A-Z0-9_]+)*)", joined)
            envvars = re.split(r",\s*", env.group(1)) if env else []
            if flags and "--help" not in flags:
                options.append(Option(flags, envvars))
            entry.clear()

    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):
            close()
            section = line[:-1]
        elif section == "Options" and re.match(r"^  -", line):
            close()
            entry.append(line)
        elif section == "Options" and entry and re.match(r"^   ", line):
            entry.append(line)
        elif section == "Commands" and re.match(r"^  \S", line):
            subcommands.append(line.split()[0])
    close()
    return options, subcommands


def run_help(command: Command) -> Command:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM_", "HONCHO_"))}
    done = subprocess.run(
        [*command.argv, "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{command.name} --help failed:\n{done.stderr}"
    command.options, command.subcommands = parse_help(done.stdout)
    return command


def processes() -> list[Command]:
    """Every process users start (a package with __main__.py) and every script in SCRIPTS."""
    found = [
        Command(f"python -m {main.parent.name}", [sys.executable, "-m", main.parent.name])
        for main in sorted(REPO.glob("*/__main__.py"))
        if main.parent.name not in NOT_PRODUCT and not main.parent.name.startswith(".")
    ]
    found += [Command(f"python {script}", [sys.executable, script]) for script in SCRIPTS]
    return found


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    """Every command and subcommand, with what its --help prints (run a wave at a time)."""
    everything: list[Command] = []
    wave = processes()
    with ThreadPoolExecutor(max_workers=4) as pool:
        while wave:
            done = list(pool.map(run_help, wave))
            everything += done
            wave = [
                Command(f"{parent.name} {sub}", [*parent.argv, sub])
                for parent in done
                for sub in parent.subcommands
            ]
    return everything


def sections(path: Path) -> dict[str, list[str]]:
    """Each heading's rendered text and the lines under it, up to the next heading."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = headings(path)
    ends = [number for number, _, _ in found[1:]] + [len(lines) + 1]
    return {text: lines[start : end - 1] for (start, _, text), end in zip(found, ends, strict=True)}


def table_rows(lines: list[str]) -> list[tuple[list[str], str]]:
    """(flags in the first cell, whole row) of every table row."""
    rows = []
    for line in lines:
        if line.lstrip().startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:]
            if cells:
                rows.append((re.findall(r"`(--?[A-Za-z0-9][\w-]*)`", cells[0]), line))
    return rows


def test_settings_has_a_row_for_every_option(commands: list[Command]) -> None:
    """Every option each command's --help prints has a row, naming its env var, in the table
    under that command's heading in docs/settings.md; no row names an option that is gone."""
    table = sections(SETTINGS)
    problems = []
    for command in commands:
        if not command.options and command.name not in table:
            continue
        if command.name not in table:
            flags = ", ".join(option.flags[0] for option in command.options)
            problems.append(
                f"no heading `{command.name}` (its options: {flags}); "
                f"add: ## `{command.name}` and a table with one row per option"
            )
            continue
        rows = table_rows(table[command.name])
        for option in command.options:
            row = next((line for flags, line in rows if option.flags[0] in flags), None)
            env = ", ".join(f"`{var}`" for var in option.envvars)
            if row is None:
                problems.append(
                    f"`{command.name}`: no row for {' / '.join(option.flags)}; "
                    f"add: | `{option.flags[0]}` | {env} | default | meaning |"
                )
                continue
            missing = [f for f in option.flags if f not in row] + [
                v for v in option.envvars if v not in row
            ]
            if missing:
                problems.append(
                    f"`{command.name}`: the row for {option.flags[0]} does not name "
                    f"{', '.join(missing)}"
                )
        printed = {flag for option in command.options for flag in option.flags}
        for flags, _ in rows:
            for flag in flags:
                if flag not in printed:
                    problems.append(
                        f"`{command.name}`: row for {flag}, which `{command.name} --help` "
                        "does not print"
                    )
    assert not problems, f"{rel(SETTINGS)}:\n" + "\n".join(problems)


def code_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if not any(part.startswith(".") for part in parts) and path != Path(__file__).resolve():
            yield path


def test_settings_names_every_variable_the_code_reads() -> None:
    """Every STREAM_* name in the product's code, and every one the tests and benchmarks read
    from the environment, appears in docs/settings.md."""
    text = SETTINGS.read_text(encoding="utf-8")
    readers: dict[str, str] = {}
    for path in code_files(REPO):
        source = path.read_text(encoding="utf-8")
        product = path.relative_to(REPO).parts[0] not in NOT_PRODUCT
        names = ENV_NAME.findall(source) if product else ENV_READ.findall(source)
        for name in names:
            readers.setdefault(name, rel(path))
    missing = [
        f"{name} (read in {where})"
        for name, where in sorted(readers.items())
        if not re.search(rf"\b{name}\b", text)
    ]
    assert readers, "found no STREAM_* variable in the code: does the scan look in the right place?"
    assert not missing, f"{rel(SETTINGS)} does not mention: " + ", ".join(missing)
