"""The batch renderer gives, byte for byte, the text of the reference row-by-row renderer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from common import render, render_compiled, schema
from conftest import REPO

# Device ids a user may really have: long cloud ids, punctuation that CSV must quote and
# JSON must escape, and names in other scripts (up to 64 bytes of UTF-8).
AWKWARD_IDS = [
    "i-0123456789abcdef0",
    "rack 4, slot 2",
    'the "main" db',
    "back\\slash",
    "capteur-température-ü",
    "温度センサー-7",
    "ç" * 32,  # 64 bytes
]


def random_batch(
    n: int, precision: int, seed: int, decimals: int = schema.DECIMALS, awkward: bool = False
) -> schema.Batch:
    rng = np.random.default_rng(seed)
    rows = schema.empty_rows(n)
    rows["ts_ms"] = 1_754_229_600_000 + np.sort(rng.integers(0, 10**8, n))
    rows["seq"] = rng.integers(0, 10**12, n)
    names = [f"host-{i % 13 + 1:02d}" for i in range(n)]
    if awkward:
        names = [
            AWKWARD_IDS[i % len(AWKWARD_IDS)] if i % 3 else name for i, name in enumerate(names)
        ]
    rows["device"] = schema.device_array(names) if n else rows["device"]
    for metric in schema.METRICS:
        rows[metric] = np.round(rng.normal(40, 300, n), decimals) + 0.0
        rows[metric][rng.random(n) < 0.1] = np.nan
    rows["cpu"][: min(n, 3)] = [0.0, 0.1, 99999.9][: min(n, 3)]
    rows["anomaly"] = rng.integers(0, len(schema.ANOMALY_KINDS) + 1, n) * (rng.random(n) < 0.3)
    rows["anomaly_id"] = np.where(rows["anomaly"] > 0, rng.integers(1, 10**13, n), 0)
    rows["anomaly_root"] = np.where(rng.random(n) < 0.5, rows["anomaly_id"], 0)
    # every set of metrics an anomaly may alter; none where there is no anomaly
    rows["anomaly_metrics"] = np.where(
        rows["anomaly"] > 0, rng.integers(1, schema.METRIC_SETS_MAX + 1, n), 0
    )
    rows["event"] = rng.integers(0, len(schema.EVENT_KINDS) + 1, n) * (rng.random(n) < 0.2)
    return schema.Batch(rows, precision, decimals)


@pytest.mark.parametrize("precision", [schema.SECONDS, schema.MILLISECONDS])
@pytest.mark.parametrize("n", [1, 2, 17, 5000])
@pytest.mark.parametrize("decimals", [0, 1, 3])
def test_csv_and_json_match_the_reference(precision, n, decimals):
    """For random batches of 1 to 5000 samples at both timestamp precisions and several
    decimals, with awkward device ids, csv_rows and json_objects give byte for byte the text
    of schema.to_csv and schema.to_json."""
    batch = random_batch(n, precision, seed=n, decimals=decimals, awkward=True)
    assert render.csv_rows(batch) == schema.to_csv(batch).encode()
    assert render.json_objects(batch) == [line.encode() for line in schema.to_json(batch)]


def test_awkward_device_ids_survive_csv_and_json():
    """Ids with commas, quotes, backslashes and non-ASCII letters read back unchanged from the
    CSV (Python's csv module) and from the JSON (json.loads)."""
    import csv
    import io

    batch = random_batch(300, schema.SECONDS, seed=5, awkward=True)
    expected = [schema.device_name(d) for d in batch.rows["device"]]
    assert set(AWKWARD_IDS) <= set(expected)
    parsed = list(csv.reader(io.StringIO(render.csv_rows(batch).decode())))
    assert [row[schema.COLUMNS.index("device")] for row in parsed] == expected
    assert all(len(row) == len(schema.COLUMNS) for row in parsed)
    assert [json.loads(o)["device"] for o in render.json_objects(batch)] == expected


def test_json_objects_parse_and_agree_with_csv():
    """Each rendered JSON object parses, and its timestamp and metric values (re-serialised, null as
    an empty field) equal the fields of the matching CSV row."""
    batch = random_batch(200, schema.MILLISECONDS, seed=3)
    lines = render.csv_rows(batch).decode().splitlines()
    for obj, line in zip(render.json_objects(batch), lines, strict=True):
        sample = json.loads(obj)
        fields = line.split(",")
        assert fields[0] == sample["timestamp"]
        for i, metric in enumerate(schema.METRICS, start=1):
            assert fields[i] == ("" if sample[metric] is None else json.dumps(sample[metric]))


def test_sixteen_digit_values_fall_back_to_the_reference():
    """A value of 16 significant digits (9838.138080716093 at 12 decimals), which scaling by
    10**12 in float64 would print as ...094, takes the reference path and keeps its digits."""
    batch = random_batch(200, schema.SECONDS, seed=2, decimals=12)
    for metric in schema.METRICS:
        batch.rows[metric] = np.round(batch.rows[metric] % 999, 12)
    batch.rows["mem"][7] = 9838.138080716093
    assert not render._exact(batch)
    if render_compiled.AVAILABLE:
        assert render_compiled.csv_rows(batch) is None
    assert b",9838.138080716093," in render.csv_rows(batch)
    assert render.csv_rows(batch) == schema.to_csv(batch).encode()


def test_huge_values_fall_back_to_the_reference():
    """A metric too large for exact int64 tenths (1e20) makes csv_rows fall back to the reference
    renderer and give schema.to_csv's text."""
    batch = random_batch(3, schema.SECONDS, seed=1)
    batch.rows["net"][1] = 1e20
    assert render.csv_rows(batch) == schema.to_csv(batch).encode()
    long = random_batch(500, schema.SECONDS, seed=1)
    long.rows["net"][400] = np.inf
    assert render.csv_rows(long) == schema.to_csv(long).encode()
    if render_compiled.AVAILABLE:
        assert render_compiled.csv_rows(long) is None


def test_empty_batch():
    """An empty batch renders to no CSV bytes and no JSON objects."""
    batch = random_batch(0, schema.SECONDS, seed=0)
    assert render.csv_rows(batch) == b"" and render.json_objects(batch) == []


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_text_frames_match_the_websockets_library(size: int) -> None:
    """The fan-out frames messages itself; a client must see what websockets would send."""
    from websockets.frames import Frame, Opcode

    from broadcaster.fanout import text_frames

    message = bytes(range(48, 58)) * (size // 10) + b"x" * (size % 10)
    expected = Frame(Opcode.TEXT, message).serialize(mask=False, extensions=[])
    assert text_frames([message]) == expected
    assert text_frames([message, b"{}"]) == expected + Frame(Opcode.TEXT, b"{}").serialize(
        mask=False, extensions=[]
    )


@pytest.mark.parametrize("precision", [schema.SECONDS, schema.MILLISECONDS])
def test_small_batches_render_like_large_ones(precision: int) -> None:
    """Small batches take a per-row path; it must give the matrix path's text, also for
    values that were not rounded to one decimal and for halves."""
    for seed in range(40):
        batch = random_batch(
            1 + seed % render.SMALL_BATCH, precision, seed=seed, decimals=seed % 4, awkward=True
        )
        rng = np.random.default_rng(seed)
        unrounded = rng.random(len(batch)) < 0.3
        batch.rows["mem"][unrounded] = rng.normal(0, 50, unrounded.sum())
        batch.rows["disk_io"][:2] = [0.25, -0.05][: len(batch)]
        assert render._small_csv(batch) == render._matrix_csv(batch)
        for metrics in (schema.METRICS, ("cpu", "net"), ("disk_io",)):
            assert render._small_json(batch, metrics) == render._matrix_json(batch, metrics)


needs_numba = pytest.mark.skipif(not render_compiled.AVAILABLE, reason="numba is not installed")


@needs_numba
@pytest.mark.parametrize("precision", [schema.SECONDS, schema.MILLISECONDS])
@pytest.mark.parametrize("decimals", [0, 1, 2, 5, 12])
def test_the_compiled_rows_are_the_numpy_rows(precision: int, decimals: int) -> None:
    """The compiled CSV loop gives the numpy matrices' text and the reference's, for awkward
    ids, NaN, negative values, halves, unrounded values, huge ids and seqs."""
    for seed in range(8):
        batch = random_batch(3000, precision, seed=seed, decimals=decimals, awkward=True)
        batch.rows["seq"][:2] = [0, 2**64 - 1]
        batch.rows["anomaly_id"][2] = 2**64 - 1
        if decimals == 12:  # 15 digits at most: values below 1000 (see render._exact)
            for metric in schema.METRICS:
                batch.rows[metric] = np.round(batch.rows[metric] % 999, 12)
        assert render._exact(batch)
        assert render_compiled.csv_rows(batch) == schema.to_csv(batch).encode()
        # Values not rounded to the batch's decimals, and halves: as the numpy path rounds.
        rng = np.random.default_rng(seed)
        unrounded = rng.random(len(batch)) < 0.2
        batch.rows["mem"][unrounded] = rng.normal(0, 50, unrounded.sum())
        batch.rows["disk_io"][:4] = [0.25, -0.05, -0.0, 0.5]
        if render._exact(batch):
            assert render_compiled.csv_rows(batch) == render._matrix_csv(batch)


@needs_numba
@pytest.mark.parametrize("precision", [schema.SECONDS, schema.MILLISECONDS])
@pytest.mark.parametrize("decimals", [0, 1, 5, 12])
def test_the_compiled_json_is_the_numpy_json(precision: int, decimals: int) -> None:
    """The compiled JSON loop gives the numpy matrices' objects (and so the reference's), for
    every subset of the metrics a client may ask for, NaN, negative values, huge ids and seqs
    and ids in other scripts; an id that JSON escapes (a quote, a backslash) declines the
    batch, which json_objects then renders the numpy way."""
    subsets = [schema.METRICS, ("cpu",), ("mem", "net"), ()]
    for seed in range(4):
        batch = random_batch(3000, precision, seed=seed, decimals=decimals)
        names = [AWKWARD_IDS[i % len(AWKWARD_IDS)] for i in range(len(batch))]
        plain = [n for n in names if '"' not in n and "\\" not in n]
        batch.rows["device"] = schema.device_array([plain[i % len(plain)] for i in range(3000)])
        batch.rows["seq"][:2] = [0, 2**64 - 1]
        batch.rows["anomaly_id"][2] = 2**64 - 1
        if decimals == 12:
            for metric in schema.METRICS:
                batch.rows[metric] = np.round(batch.rows[metric] % 999, 12)
        assert render._exact(batch)
        for metrics in subsets:
            text = render_compiled.json_lines(batch, metrics)
            assert text is not None
            assert text.split(b"\n")[:-1] == render._matrix_json(batch, metrics)
        assert render.wait_for_compiled_json()
        assert render.json_objects(batch) == [line.encode() for line in schema.to_json(batch)]
    awkward = random_batch(500, precision, seed=5, decimals=decimals, awkward=True)
    assert render_compiled.json_lines(awkward) is None
    assert render.json_objects(awkward) == [line.encode() for line in schema.to_json(awkward)]
    for outside in (render_compiled._FIRST_MS - 1, render_compiled._END_MS):
        batch.rows["ts_ms"][-1] = outside
        assert render_compiled.json_lines(batch) is None
    for label in ("anomaly", "event", "anomaly_metrics"):
        unknown = random_batch(200, precision, seed=4)
        unknown.rows[label][150] = 200
        assert render_compiled.json_lines(unknown) is None


@needs_numba
@pytest.mark.parametrize("precision", [schema.SECONDS, schema.MILLISECONDS])
def test_the_compiled_timestamps_are_numpys_over_years_1000_to_9999(precision: int) -> None:
    """Timestamps anywhere from 1000-01-01 to 9999-12-31 (before 1970 too, leap days, the
    last millisecond of a day) show as numpy shows them; outside, the numpy path is used."""
    rng = np.random.default_rng(precision)
    batch = random_batch(20_000, precision, seed=11)
    first, end = render_compiled._FIRST_MS, render_compiled._END_MS
    stamps = rng.integers(first, end, len(batch))
    stamps[:6] = [first, -1, 0, 951_782_400_000, 951_868_799_999, end - 1]  # 2000-02-29
    batch.rows["ts_ms"] = np.sort(stamps)
    assert render_compiled.csv_rows(batch) == schema.to_csv(batch).encode()
    for outside in (first - 1, end):
        batch.rows["ts_ms"][-1] = outside
        assert render_compiled.csv_rows(batch) is None
        assert render.csv_rows(batch) == schema.to_csv(batch).encode()


@needs_numba
def test_the_compiled_rows_with_nowhere_to_cache_them(tmp_path) -> None:
    """Installed read-only, with no writable cache directory either, the compiled loop is
    compiled in the process (numba cannot cache it) and writes the same text."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare, for a read-only mount in a mount namespace")
    source, home = tmp_path / "src", tmp_path / "home"
    shutil.copytree(
        REPO / "common", source / "common", ignore=shutil.ignore_patterns("__pycache__")
    )
    home.mkdir()
    script = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "from test_render import random_batch\n"
        "from common import render_compiled\n"
        "text = render_compiled.csv_rows(random_batch(500, 3, seed=9, awkward=True))\n"
        "sys.stdout.buffer.write(text)\n"
    )
    read_only = " && ".join(
        f"mount --bind {d} {d} && mount -o remount,ro,bind {d}" for d in (source, home)
    )
    run = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'{read_only} && exec "$0" -c "$1" "$2" "$3"',
            sys.executable,
            script,
            str(source),
            str(REPO / "tests"),
        ],
        env={"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "PATH": os.environ["PATH"]},
        capture_output=True,
        timeout=120,
    )
    if run.returncode and b"mount" in run.stderr and b"Traceback" not in run.stderr:
        pytest.skip(f"read-only bind mounts do not work here: {run.stderr.decode().strip()}")
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    batch = random_batch(500, 3, seed=9, awkward=True)
    assert run.stdout == schema.to_csv(batch).encode()
    assert not list(source.rglob("*.nbi"))  # nothing was cached: it could not be


@needs_numba
def test_the_compiled_rows_decline_unknown_labels() -> None:
    """A label code past the known kinds (never in a valid batch) makes the compiled loop
    decline, rather than read past its tables."""
    for label in ("anomaly", "event", "anomaly_metrics"):
        batch = random_batch(200, schema.SECONDS, seed=4)
        batch.rows[label][150] = 200
        assert render_compiled.csv_rows(batch) is None


def test_anomaly_metrics_are_the_windows_files_form():
    """Each labelled sample names the metrics its anomaly alters, `|`-joined in the contract's
    order as the windows file's `metrics` column does, the same text in CSV (last column) and
    JSON (a string); an unlabelled sample has an empty field and null."""
    import csv
    import io

    batch = random_batch(400, schema.SECONDS, seed=8)
    rows = batch.rows
    expected = ["|".join(schema.metric_names(int(m))) for m in rows["anomaly_metrics"]]
    assert {"cpu", "mem|net", "cpu|mem|disk_io|net"} <= set(expected)
    parsed = list(csv.reader(io.StringIO(render.csv_rows(batch).decode())))
    assert [row[-1] for row in parsed] == expected
    assert schema.COLUMNS[-1] == "anomaly_metrics"
    shown = [json.loads(o)["anomaly_metrics"] for o in render.json_objects(batch)]
    assert shown == [text or None for text in expected]
    labelled = rows["anomaly"] > 0
    assert [bool(text) for text in expected] == labelled.tolist()


def test_a_stray_anomaly_metrics_mask_is_not_a_valid_sample():
    """Bits beyond the four metrics, or metrics named on a sample without an anomaly, are
    refused by the one definition of a valid sample, naming the value."""
    batch = random_batch(50, schema.SECONDS, seed=6)
    for metric in schema.METRICS:  # values inside every domain: only the labels differ
        batch.rows[metric] = 5.0
    schema.validate(batch.rows)
    for value, kind in ((16, 1), (3, 0)):
        rows = batch.rows.copy()
        rows["anomaly"][10], rows["anomaly_id"][10] = kind, kind
        rows["anomaly_metrics"][10] = value
        with pytest.raises(ValueError, match=f"anomaly_metrics {value} with anomaly code {kind}"):
            schema.validate(rows)


@needs_numba
def test_json_renders_while_the_compiled_loop_is_made_ready(tmp_path) -> None:
    """In a fresh process that prefers the compiled loop (a bridge) and whose numba cache is
    empty, the first large batch is rendered the numpy way at once (not after the compiler),
    the loop is made ready in a thread, and later batches use it; the text is the same."""
    source = tmp_path / "src"
    shutil.copytree(
        REPO / "common", source / "common", ignore=shutil.ignore_patterns("__pycache__")
    )
    script = (
        "import sys, time; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "from test_render import random_batch\n"
        "from common import render, schema\n"
        "batch = random_batch(500, 3, seed=9)\n"
        "render.prefer_compiled_json()\n"
        "began = time.monotonic(); first = render.json_objects(batch)\n"
        "took = time.monotonic() - began\n"
        "ready = render._json_loop is not None\n"
        "assert render.wait_for_compiled_json(120)\n"
        "later = render.json_objects(batch)\n"
        "assert first == later == [l.encode() for l in schema.to_json(batch)]\n"
        "print(took, ready)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(source), str(REPO / "tests")],
        env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    took, ready = run.stdout.split()
    assert ready == "False"  # the first batch did not wait for the compiler
    assert float(took) < 1.0  # the numpy matrices: milliseconds, a compile takes seconds
