"""How alerts are judged: tolerances, threshold, and the options of NAB and range-based scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass

BIASES = ("flat", "front", "back", "middle")
CARDINALITIES = ("one", "reciprocal")
NAB_PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


@dataclass(frozen=True)
class Settings:
    early_s: float = 0.0  # an alert this long before an event's first sample still detects it
    late_s: float = 5.0  # ... and this long after its last sample
    threshold: float | None = None  # alerts whose score is below are ignored (None: all count)
    nab_probation: float = 0.15  # NAB's probationary share of each device's rows
    range_alpha: float = 0.0  # range-based recall: weight of merely detecting a range
    range_bias: str = "flat"  # range-based: which positions in a range weigh more
    range_cardinality: str = "one"  # range-based: a range split over several: 1 or 1/x
    # NAB profiles scored at a threshold of their own ((profile, threshold), ...), as NAB
    # publishes each profile's results at the threshold optimised for it
    nab_thresholds: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.early_s < 0 or self.late_s < 0:
            raise ValueError(f"tolerances must be >= 0, got {self.early_s} and {self.late_s}")
        if not 0 <= self.nab_probation < 1:
            raise ValueError(f"nab probation must be in [0, 1), got {self.nab_probation}")
        if not 0 <= self.range_alpha <= 1:
            raise ValueError(f"range alpha must be in [0, 1], got {self.range_alpha}")
        if self.range_bias not in BIASES:
            raise ValueError(f"range bias {self.range_bias!r}; allowed: {', '.join(BIASES)}")
        if self.range_cardinality not in CARDINALITIES:
            raise ValueError(
                f"range cardinality {self.range_cardinality!r}; allowed: {', '.join(CARDINALITIES)}"
            )

        for profile, _ in self.nab_thresholds:
            if profile not in NAB_PROFILES:
                raise ValueError(
                    f"unknown NAB profile {profile!r}; allowed: {', '.join(NAB_PROFILES)}"
                )

    def nab_threshold(self, profile: str) -> float | None:
        """The threshold NAB's `profile` is scored at."""
        return dict(self.nab_thresholds).get(profile, self.threshold)

    def describe(self) -> dict:
        body = asdict(self)
        body["nab_thresholds"] = dict(self.nab_thresholds)
        return body
