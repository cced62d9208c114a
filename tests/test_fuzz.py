"""Property-based tests of what comes from outside: whatever the input, it is either accepted
and delivered whole, or refused with a clear message; no other exception escapes.

The number of examples is bounded (see the `ci` profile in conftest.py), so the suite's
run time stays predictable; `HYPOTHESIS_PROFILE=deep` runs many more.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.parse

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.since import SinceError, from_message, from_query
from broadcaster.subscription import Subscription, SubscriptionError
from common import render, schema
from common.errors import StartupError
from delivery import protocol
from producer.sources import recording as recording_module

_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=100).map(lambda v: round(v, 1)),
)
_device_bytes = st.one_of(
    st.binary(max_size=schema.DEVICE_MAX_BYTES),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")[:64]),
    st.sampled_from([b"host-01", b"a,b", b'q"uote', "h\u00f6st".encode(), b" x", b"x\x00y"]),
)


@st.composite
def rows(draw) -> np.ndarray:
    n = draw(st.integers(0, 6))
    out = schema.empty_rows(n)
    for i in range(n):
        out["ts_ms"][i] = draw(st.integers(-(2**40), 2**48))
        out["seq"][i] = draw(st.integers(0, 2**63))
        out["device"][i] = draw(_device_bytes)
        for metric in schema.METRICS:
            out[metric][i] = draw(_floats)
        out["anomaly"][i] = draw(st.integers(0, 255))
        out["anomaly_id"][i] = draw(st.integers(0, 2**64 - 1))
        out["anomaly_root"][i] = draw(st.integers(0, 2**64 - 1))
        out["event"][i] = draw(st.integers(0, 5))
    return out


def _check_delivered(batch: schema.Batch) -> None:
    """An accepted batch renders to CSV rows of exactly the schema's columns and to JSON
    objects that parse, with every device id intact."""
    text = render.csv_rows(batch).decode()
    parsed = list(csv.reader(io.StringIO(text)))
    assert len(parsed) == len(batch)
    assert all(len(row) == len(schema.COLUMNS) for row in parsed)
    devices = [schema.device_name(d) for d in batch.rows["device"]]
    assert [row[schema.COLUMNS.index("device")] for row in parsed] == devices
    objects = [json.loads(o) for o in render.json_objects(batch)]
    assert [o["device"] for o in objects] == devices


@given(rows(), st.integers(0, 1).map(lambda p: p * 3), st.integers(0, 14))
def test_encoded_rows_are_accepted_whole_or_refused(rows, precision, decimals):
    """Any record values, once on the wire, decode to a batch every output can show, or to a
    MessageError; the producer's own check (validate) agrees with the subscriber's."""
    frames = schema.encode(schema.Batch(rows, precision, decimals))
    try:
        batch = schema.decode(frames)
    except schema.MessageError as exc:
        assert str(exc)
        return
    schema.validate(rows)  # what a subscriber accepts, a producer would have published
    _check_delivered(batch)


@given(st.lists(st.binary(max_size=200), max_size=5))
def test_arbitrary_frames_never_raise_anything_else(frames):
    """Arbitrary multipart frames decode or raise MessageError, and salvage never raises."""
    try:
        batch = schema.decode(frames)
    except schema.MessageError:
        schema.salvage(frames)
        return
    _check_delivered(batch)


@given(rows(), st.integers(0, 2), st.binary(min_size=1, max_size=4), st.integers(0, 200))
def test_corrupted_messages(rows, frame, patch, at):
    """A valid message with some bytes overwritten decodes or raises MessageError."""
    frames = [bytearray(f) for f in schema.encode(schema.Batch(rows))]
    target = frames[frame]
    if target:
        position = at % len(target)
        target[position : position + len(patch)] = patch
    frames = [bytes(f) for f in frames]
    try:
        batch = schema.decode(frames)
    except schema.MessageError:
        return
    _check_delivered(batch)


@given(st.binary(max_size=300))
def test_catchup_requests(body):
    """Any catch-up request body is parsed or refused with ProtocolError."""
    try:
        after, after_ts = protocol.decode_request([protocol.REQUEST, body])
    except protocol.ProtocolError:
        return
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in after.items())
    assert isinstance(after_ts, int)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.one_of(
        st.text(max_size=200),
        _json_values.map(json.dumps),
        st.dictionaries(
            st.sampled_from(["devices", "fields", "max_rate", "batch", "history", "x"]),
            _json_values,
            max_size=4,
        ).map(lambda d: json.dumps({"subscribe": d})),
    )
)
def test_subscription_messages(text):
    """Any message from a WebSocket client gives a Subscription or a SubscriptionError with
    a message."""
    try:
        Subscription.from_message(text)
    except SubscriptionError as exc:
        assert str(exc)


@given(st.text(max_size=200))
def test_subscription_queries(query):
    """Any query string gives a Subscription or a SubscriptionError with a message."""
    try:
        Subscription.from_query(query)
    except SubscriptionError as exc:
        assert str(exc)


_since_values = st.one_of(
    st.integers(-5, 2**70).map(str),
    st.tuples(st.text(max_size=70), st.integers(-5, 2**64).map(str)).map(":".join),
    st.text(max_size=30),
)


@given(st.lists(_since_values, max_size=4), st.booleans())
def test_resume_queries(values, encode):
    """Any `since=` values in a query give a resume point (device ids valid, seqs integers)
    or a SinceError with a message."""
    query = "&".join("since=" + (urllib.parse.quote(v, safe="") if encode else v) for v in values)
    try:
        since = from_query(query)
    except SinceError as exc:
        assert str(exc)
        return
    if since is None:
        assert not values
        return
    for device, seq in since.devices.items():
        assert schema.device_problem(device) is None and isinstance(seq, int)


@given(_json_values)
def test_resume_messages(body):
    """Any JSON body of a resume message gives a resume point or a SinceError."""
    try:
        from_message(body)
    except SinceError as exc:
        assert str(exc)


_cells = st.one_of(
    st.sampled_from(["", "nan", "inf", "-1", "0.132", "150", "1e3", "abc", '"q,uote"']),
    st.sampled_from(["2025-08-04 00:00:01", "2025-08-04T00:00:02Z", "yesterday", "0"]),
    st.sampled_from(["host-01", "a,b", "温度", " pad", "x\ty", "spike", "maintenance", "7"]),
    st.text(max_size=12),
)


@given(
    st.sampled_from(
        [
            "timestamp,value",
            "timestamp,cpu,mem,disk_io,net,device",
            "timestamp,cpu,mem,disk_io,net,device,seq,anomaly,anomaly_id,anomaly_root,event",
            "value,timestamp",
            "",
        ]
    ),
    st.lists(st.lists(_cells, max_size=12), max_size=8),
    st.sampled_from(["error", "skip"]),
)
def test_replay_files(tmp_path_factory, header, rows, on_bad_row):
    """Any CSV text given as a replay file is refused with a one-line message, or read into
    rows that are all valid samples except those it marks refused (with skip)."""
    path = tmp_path_factory.mktemp("replay") / "in.csv"
    text = "\n".join([header, *(",".join(r) for r in rows)])
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        recording = recording_module.load(path, "cpu", on_bad_row)
    except StartupError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    ok = ~recording.refused
    assert on_bad_row == "skip" or ok.all()
    rows_out = schema.empty_rows(int(ok.sum()))
    # Published on the file's time axis, rebased: here to 2025-08-03 (the gate refuses, at
    # publishing, what a rebase would push past the year 9999).
    rows_out["ts_ms"] = 1_754_229_600_000 + np.minimum(recording.offset_ms[ok], 10**14)
    rows_out["device"] = recording.devices[recording.device_index[ok]]
    for i, metric in enumerate(schema.METRICS):
        rows_out[metric] = recording.values[ok, i]
    for label in ("anomaly", "anomaly_id", "anomaly_root", "event"):
        rows_out[label] = getattr(recording, label)[ok]
    schema.validate(rows_out)
    _check_delivered(schema.Batch(rows_out, decimals=recording.decimals))


@given(rows(), st.integers(0, 1).map(lambda p: p * 3), st.integers(0, 12))
def test_the_compiled_loops_are_the_references(rows, precision, decimals):
    """Whatever a subscriber accepts, the compiled loops write the numpy renderer's CSV text
    and JSON objects, or decline (None) exactly when a value or a timestamp is outside their
    range, or (JSON) a device id needs escaping."""
    from common import render_compiled

    try:
        schema.validate(rows)
    except ValueError:
        return
    batch = schema.Batch(rows, precision, decimals)
    if not len(batch):
        return
    ts = rows["ts_ms"]
    in_range = render._exact(batch) and (
        render_compiled._FIRST_MS <= ts.min() and ts.max() < render_compiled._END_MS
    )
    escaped = any(
        b'"' in d or b"\\" in d or any(c < 32 for c in d) for d in rows["device"].tolist()
    )
    text = render_compiled.csv_rows(batch)
    assert text == (render._matrix_csv(batch) if in_range else None)
    objects = render_compiled.json_lines(batch)
    if in_range and not escaped:
        assert objects is not None
        assert objects.split(b"\n")[:-1] == render._matrix_json(batch, schema.METRICS)
    else:
        assert objects is None  # the caller's other paths render it
