"""What a consumer did not deliver: the one `Gap`, a gap record (a gap and its reason), and
the gaps file they are written to.

A gaps file is a CSV with this header, one row per record, appended as gaps are found:

    device,first_missing_seq,last_missing_seq,after,before,reason
    host-01,1200,1349,2026-11-28 00:20:00,2026-11-28 00:22:31,not_held

`first_missing_seq`..`last_missing_seq` (inclusive) are the seqs not delivered, `after` and
`before` the timestamps of the samples around them (for a gap found by a seq jump; for the
bridge's `given_up`, `unsent` and `unacknowledged`, the first and last missing sample's; for
a series start, the first sample delivered, twice), shown at the precision of the samples
around them; `reason` is a word of delivery.reasons. A device id holding a comma or a
quote is quoted as in the samples' CSV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from common import schema
from common.csvfile import CsvFile
from delivery.reasons import Reason

GAPS_HEADER = "device,first_missing_seq,last_missing_seq,after,before,reason"


@dataclass(frozen=True)
class Gap:
    """Seqs `first`..`last` of `device` that are not delivered.

    Only a resume's answer leaves ends open: `last` None, up to the next sample the client
    gets (a producer did not answer); `device` None, every device of such a producer not
    named otherwise."""

    device: str | None
    first: int  # first missing seq
    last: int | None  # last missing seq
    after_ms: int = 0  # timestamp of the sample before the gap
    before_ms: int = 0  # timestamp of the sample after it

    def row(self, reason: str, precision: int) -> str:
        """The gaps-file row of this gap with `reason`."""
        rows = schema.empty_rows(2)
        rows["ts_ms"] = [self.after_ms, self.before_ms]
        after, before = schema.format_timestamps(schema.Batch(rows, precision))
        device = schema.csv_field(self.device or "")
        return f"{device},{self.first},{self.last},{after},{before},{reason}\n"


class GapRecord(NamedTuple):
    """A gap and the one reason it was not delivered."""

    gap: Gap
    reason: Reason | str  # a str only for a producer's word this consumer does not know

    @property
    def device(self) -> str | None:
        return self.gap.device

    @property
    def from_seq(self) -> int:
        return self.gap.first

    @property
    def to_seq(self) -> int | None:
        return self.gap.last

    def describe(self) -> dict[str, Any]:
        """As a WebSocket gap message names it (one range of `{"gap": {"ranges": [...]}}`)."""
        return {
            "device": self.device,
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "reason": str(self.reason),
        }

    def text(self) -> str:
        """One line for a log."""
        gap = self.gap
        if gap.last is None:
            return f"{gap.device or 'every device'} seq {gap.first}.. {self.reason}"
        count = gap.last - gap.first + 1
        return f"{gap.device} seq {gap.first}..{gap.last} ({count} samples) {self.reason}"


def summary(records: list[GapRecord], shown: int = 3) -> str:
    """One log line for some records: the first `shown` of them, and how many more."""
    more = f" and {len(records) - shown} more" if len(records) > shown else ""
    return "; ".join(r.text() for r in records[:shown]) + more


def rows(records: list[GapRecord], precision: int) -> bytes:
    """Gaps-file rows of some records, timestamps shown at `precision`."""
    return "".join(gap.row(reason, precision) for gap, reason in records).encode()


def gaps_file(path: Path, owner: str = "process", option: str | None = None) -> CsvFile:
    """A gaps file (not opened yet): appended to by one `owner` at a time."""
    return CsvFile(path, header=GAPS_HEADER, owner=owner, option=option)
