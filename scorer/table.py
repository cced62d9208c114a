"""The report as a table a person reads in a terminal: one row per kind, then overall."""

from __future__ import annotations

from scorer.report import Report

COLUMNS = (
    ("kind", "kind", "{}"),
    ("events", "events", "{:d}"),
    ("detected", "found", "{:d}"),
    ("recall", "recall", "{:.2f}"),
    ("precision", "prec", "{:.2f}"),
    ("ttd_s_median", "ttd p50 s", "{:.1f}"),
    ("ttd_s_p90", "ttd p90 s", "{:.1f}"),
    ("ttd_samples_median", "ttd p50 n", "{:.0f}"),
    ("event_f1", "event F1", "{:.2f}"),
    ("range_f1", "range F1", "{:.2f}"),
    ("nab_standard", "NAB std", "{:.1f}"),
    ("nab_reward_low_FP_rate", "NAB lowFP", "{:.1f}"),
    ("nab_reward_low_FN_rate", "NAB lowFN", "{:.1f}"),
)


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def render(report: Report) -> str:
    """The table, with a header line naming the detector and the alerts' fate."""
    rows = []
    views = [k for k in report.figures if k != "overall"] + ["overall"]
    for view in views:
        figures = report.figures[view]
        rows.append([view] + [_cell(figures.get(key), fmt) for key, _, fmt in COLUMNS[1:]])
    header = [title for _, title, _ in COLUMNS]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    a, t = report.alerts, report.truth
    overall = report.figures["overall"]
    fp_rate = overall.get("fp_per_device_hour")
    planned = sum(a.get("during_planned", {}).values())
    title = (
        f"detector {report.detector}: {a['received']} alert(s), {a['distinct']} distinct: "
        f"{a['true']} true, {a['false']} false "
        f"({'-' if fp_rate is None else f'{fp_rate:.2f}'} per device-hour), "
        f"{planned} in planned events; {t['devices']} device(s), {t['samples']} samples, "
        f"{t['groups']} event(s)"
    )
    out = [title, line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)
