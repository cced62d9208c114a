"""The dashboard's colours: one per anomaly kind and per planned event, told apart by
colour-blind readers too.

Anomaly kinds take Paul Tol's "muted" qualitative scheme (nine colours made to stay
distinct under the common colour-vision deficiencies, and his pale grey for `window`, a
replayed benchmark's label whose kind is not known). Planned events, drawn as bars rather
than shaded bands, take three of Okabe and Ito's colours. tests/test_palette.py checks that
every two colours of a set differ by a CIEDE2000 distance of at least 10 for normal vision
and as protanopes, deuteranopes and tritanopes see them (Machado et al., 2009).
"""

from __future__ import annotations

from common import schema

ANOMALY_COLORS: dict[str, str] = {
    "spike": "#CC6677",  # rose
    "dip": "#332288",  # indigo
    "level_shift": "#DDCC77",  # sand
    "drift": "#117733",  # green
    "stuck": "#88CCEE",  # cyan
    "dropout": "#882255",  # wine
    "noise_burst": "#44AA99",  # teal
    "memory_leak": "#999933",  # olive
    "incident": "#AA4499",  # purple
    "window": "#DDDDDD",  # pale grey: a benchmark's window, kind not known
}
EVENT_COLORS: dict[str, str] = {
    "maintenance": "#555555",  # grey
    "deploy": "#0072B2",  # blue
    "load_test": "#E69F00",  # orange
}
assert tuple(ANOMALY_COLORS) == schema.ANOMALY_KINDS, "a colour for every anomaly kind"
assert tuple(EVENT_COLORS) == schema.EVENT_KINDS, "a colour for every event kind"
