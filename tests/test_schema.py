"""The wire schema: round trip, rendering, and rejection of malformed messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import schema


def make_batch(n: int = 3, precision: int = schema.SECONDS) -> schema.Batch:
    rows = schema.empty_rows(n)
    rows["ts_ms"] = 1_754_229_600_000 + np.arange(n) * 1000
    rows["seq"] = np.arange(n) + 7
    rows["device"] = b"host-01"
    rows["cpu"] = 47.2
    rows["mem"] = 62.1
    rows["disk_io"] = 120.0
    rows["net"] = 58.0
    return schema.Batch(rows=rows, precision=precision)


class TestRoundTrip:
    def test_decode_returns_what_was_encoded(self):
        """Every field survives encode/decode unchanged."""
        batch = make_batch(5, schema.MILLISECONDS)
        decoded = schema.decode(schema.encode(batch))
        assert decoded.precision == schema.MILLISECONDS
        assert decoded.rows.tobytes() == batch.rows.tobytes()

    def test_empty_batch(self):
        """A batch with no samples is valid and renders to nothing."""
        decoded = schema.decode(schema.encode(make_batch(0)))
        assert len(decoded) == 0
        assert schema.to_csv(decoded) == ""
        assert schema.to_json(decoded) == []


class TestRendering:
    def test_json_matches_the_spec_example(self):
        """The five contract keys come first, in order, with one decimal; device and seq follow."""
        (line, *_) = schema.to_json(make_batch())
        assert line == (
            '{"timestamp":"2025-08-03 14:00:00","cpu":47.2,"mem":62.1,"disk_io":120.0,'
            '"net":58.0,"device":"host-01","seq":7,"anomaly":null,"anomaly_id":null,'
            '"anomaly_root":null,"event":null,"anomaly_metrics":null}'
        )
        assert list(json.loads(line))[:5] == ["timestamp", "cpu", "mem", "disk_io", "net"]

    def test_csv_row_has_the_same_text_as_json(self):
        """CSV and JSON show the very same timestamp and values."""
        batch = make_batch(1, schema.MILLISECONDS)
        row = schema.to_csv(batch).rstrip("\n").split(",")
        sample = json.loads(schema.to_json(batch)[0])
        assert row == [
            sample["timestamp"],
            "47.2",
            "62.1",
            "120.0",
            "58.0",
            "host-01",
            "7",
            "",
            "",
            "",
            "",
            "",
        ]
        assert sample["timestamp"] == "2025-08-03 14:00:00.000"

    def test_missing_values_are_null_in_json_and_empty_in_csv(self):
        """NaN means "no value": null in JSON, an empty CSV field."""
        batch = make_batch(1)
        batch.rows["cpu"] = np.nan
        assert json.loads(schema.to_json(batch)[0])["cpu"] is None
        assert schema.to_csv(batch).split(",")[1] == ""

    def test_seconds_precision_floors(self):
        """At second precision a timestamp never shows a later second than it happened in."""
        batch = make_batch(1)
        batch.rows["ts_ms"] = 1_754_229_600_999
        assert schema.format_timestamps(batch)[0] == "2025-08-03 14:00:00"

    def test_precision_follows_the_rate(self):
        """Rates up to 1 Hz (1 and 0.2) get second timestamps, and a rate above 1 Hz (1.5) gets
        milliseconds."""
        assert schema.precision_for_rate(1) == schema.SECONDS
        assert schema.precision_for_rate(0.2) == schema.SECONDS
        assert schema.precision_for_rate(1.5) == schema.MILLISECONDS


def _corrupt(frames: list[bytes], index: int, value: bytes) -> list[bytes]:
    frames = list(frames)
    frames[index] = value
    return frames


class TestMalformed:
    @pytest.mark.parametrize(
        "frames, message",
        [
            ([b"samples"], "expected 3 frames"),
            ([b"other", b"", b""], "unexpected topic"),
            ([b"samples", b"short", b""], "header must be"),
            ([b"samples", b"XXXX" + bytes(8), b""], "bad magic"),
            ([b"", b"", b"", b""], "expected 3 frames"),
        ],
    )
    def test_structural_errors(self, frames, message):
        """Wrong frame count, topic, header size or magic raise MessageError naming the problem."""
        with pytest.raises(schema.MessageError, match=message):
            schema.decode(frames)

    def test_body_length_must_match_count(self):
        """A body one byte shorter than the header's sample count requires raises MessageError about
        the body length."""
        frames = schema.encode(make_batch(2))
        with pytest.raises(schema.MessageError, match="body is"):
            schema.decode(_corrupt(frames, 2, frames[2][:-1]))

    def test_unknown_version_and_precision(self):
        """A header with an unknown version byte or an unknown precision byte raises MessageError
        naming the version or the precision respectively."""
        frames = schema.encode(make_batch(1))
        header = bytearray(frames[1])
        header[4] = 99
        with pytest.raises(schema.MessageError, match="version"):
            schema.decode(_corrupt(frames, 1, bytes(header)))
        header = bytearray(frames[1])
        header[5] = 7
        with pytest.raises(schema.MessageError, match="precision"):
            schema.decode(_corrupt(frames, 1, bytes(header)))

    def test_values_outside_the_one_definition_of_a_sample(self):
        """Infinite or out-of-domain values, invalid device ids, unknown labels and absurd
        timestamps are refused with a message naming the problem."""
        for field, value, message in [
            ("cpu", np.inf, "cpu infinite"),
            ("cpu", 150.0, r"cpu 150 is outside its domain \[0, 100\]"),
            ("mem", -0.1, "mem -0.1 is outside"),
            ("net", -3.0, "net -3 is outside its domain >= 0"),
            ("device", b"h\xffst", "not UTF-8"),
            ("device", b"a\nb", "control"),
            ("device", b"a\x00b", "NUL"),
            ("device", b"", "empty"),
            ("device", b" padded", "space"),
            ("device", "zero\u200bwidth".encode(), "control or format"),
            ("anomaly", len(schema.ANOMALY_KINDS) + 1, "unknown anomaly"),
            ("event", len(schema.EVENT_KINDS) + 1, "unknown event"),
            ("ts_ms", -5, "timestamp"),
        ]:
            batch = make_batch(2)
            batch.rows[field][1] = value
            with pytest.raises(schema.MessageError, match=message):
                schema.decode(schema.encode(batch))

    def test_version_2_messages_are_refused_clearly(self):
        """A message of the previous wire format version is refused with a message that names
        both versions and what to do."""
        frames = schema.encode(make_batch(1))
        header = bytearray(frames[1])
        header[4] = 2
        with pytest.raises(schema.MessageError, match="version 2, expected 3: run the same"):
            schema.decode(_corrupt(frames, 1, bytes(header)))

    def test_decimals_travel_with_the_batch(self):
        """The number of decimals a batch is shown with survives the wire and is bounded."""
        batch = schema.Batch(make_batch(2).rows, decimals=3)
        batch.rows["cpu"] = 0.132
        decoded = schema.decode(schema.encode(batch))
        assert decoded.decimals == 3
        assert json.loads(schema.to_json(decoded)[0])["cpu"] == 0.132
        assert schema.to_csv(decoded).split(",")[1] == "0.132"
        header = bytearray(schema.encode(batch)[1])
        header[6] = schema.MAX_DECIMALS + 1
        with pytest.raises(schema.MessageError, match="decimals"):
            schema.decode(_corrupt(schema.encode(batch), 1, bytes(header)))

    def test_real_device_ids_are_accepted(self):
        """Cloud instance ids, pod names, ids with commas or quotes and non-ASCII names of up to
        64 bytes are valid; 65 bytes are not."""
        for name in [
            "i-0123456789abcdef0",
            "web-7d4b9c8f6d-x2x9z.prod",
            'rack 4, "top"',
            "温度センサー",
            "é" * 32,
        ]:
            assert schema.device_problem(name) is None, name
            batch = make_batch(1)
            batch.rows["device"] = schema.device_bytes(name)
            decoded = schema.decode(schema.encode(batch))
            assert schema.device_name(decoded.rows["device"][0]) == name
        assert "65 bytes" in schema.device_problem("é" * 32 + "x")

    def test_random_garbage_never_raises_anything_else(self):
        """Whatever the bytes, decode either succeeds or raises MessageError."""
        rng = np.random.default_rng(1)
        good = schema.encode(make_batch(3))
        for _ in range(2000):
            frames = [bytes(f) for f in good]
            i = int(rng.integers(3))
            data = bytearray(frames[i])
            if data:
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            frames[i] = bytes(data)
            try:
                batch = schema.decode(frames)
            except schema.MessageError:
                continue
            schema.to_json(batch)
            schema.to_csv(batch)


class TestOneDefinition:
    BAD = [
        ("timestamp", "ts_ms", -5),
        ("device", "device", b" padded"),
        ("device", "device", b"h\xffst"),
        ("cpu", "cpu", 100.5),
        ("mem", "mem", -1.0),
        ("disk_io", "disk_io", np.inf),
        ("net", "net", -np.inf),
        ("anomaly", "anomaly", len(schema.ANOMALY_KINDS) + 1),
        ("event", "event", len(schema.EVENT_KINDS) + 1),
        ("label", "anomaly_id", 5),  # an event id without a kind
    ]

    @pytest.mark.parametrize("rule, field, value", BAD, ids=[f"{b[0]}-{b[2]!r}" for b in BAD])
    def test_invalid_rows_flags_exactly_what_validate_refuses(self, rule, field, value):
        """For each rule, a batch with one breaking row: invalid_rows flags that row alone,
        problems() names the rule with validate()'s message, and the other rows pass."""
        batch = make_batch(5)
        batch.rows[field][3] = value
        if field == "anomaly":
            batch.rows["anomaly_id"][3] = 1  # an unknown kind, with its id
        assert schema.invalid_rows(batch.rows).tolist() == [False, False, False, True, False]
        with pytest.raises(ValueError) as refused:
            schema.validate(batch.rows)
        [(name, rows, message)] = schema.problems(batch.rows)
        assert (name, rows.tolist(), message) == (rule, [0, 0, 0, 1, 0], str(refused.value))
        schema.validate(np.delete(batch.rows, 3))

    def test_missing_values_and_full_labels_are_valid(self):
        """NaN (no value), values at the edges of their domains, and a label with both its kind
        and its id are valid."""
        batch = make_batch(4)
        batch.rows["cpu"] = [np.nan, 0.0, 100.0, 5.0]
        batch.rows["net"] = [np.nan, 0.0, 1e12, 5.0]
        batch.rows["anomaly"][1] = 1
        batch.rows["anomaly_id"][1] = 9
        assert not schema.invalid_rows(batch.rows).any()
        assert schema.problems(batch.rows) == []
        schema.validate(batch.rows)

    def test_random_records_agree_between_validate_and_invalid_rows(self):
        """Over random records, validate() refuses a batch exactly when invalid_rows() flags a
        row of it, and accepts the batch without the flagged rows."""
        rng = np.random.default_rng(3)
        for _ in range(300):
            raw = rng.integers(0, 256, (4, schema.RECORD.itemsize), dtype=np.uint8)
            rows = raw.view(schema.RECORD).ravel()
            bad = schema.invalid_rows(rows)
            try:
                schema.validate(rows)
                refused = False
            except ValueError:
                refused = True
            assert refused == bad.any()
            schema.validate(rows[~bad])


@pytest.mark.parametrize("precision", [schema.SECONDS, schema.MILLISECONDS])
def test_one_timestamp_in_python_is_shown_as_numpy_shows_it(precision: int) -> None:
    """format_timestamp (Python, for a window's start and end) gives format_timestamps's text
    for any time, years before 1000 and after 9999 included, and the edges of that range."""
    rng = np.random.default_rng(precision)
    edges = [-30_610_224_000_001, -30_610_224_000_000, -1, 0, 253_402_300_800_000 - 1]
    stamps = np.r_[rng.integers(-(2**45), 2**48, 5000), edges, 253_402_300_800_000]
    rows = schema.empty_rows(len(stamps))
    rows["ts_ms"] = stamps
    expected = schema.format_timestamps(schema.Batch(rows, precision)).tolist()
    assert [schema.format_timestamp(int(t), precision) for t in stamps] == expected
