"""The report as a picture: recall and time to detect per kind for each detector, and a
timeline of events and alerts on the devices that had events."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scorer.report import Report

MAX_DEVICES = 12  # timeline rows
_VERDICT_COLOURS = {"true": "#15803d", "false": "#b91c1c", "planned": "#6b7280"}


def draw(reports: list[Report], path: Path) -> None:
    """Write the picture of one or more detectors' reports (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({k for r in reports for k in r.figures if k != "overall"}) + ["overall"]
    fig = plt.figure(figsize=(13, 9), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.3])
    recall_ax, ttd_ax = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    time_ax = fig.add_subplot(grid[1, :])
    width = 0.8 / max(len(reports), 1)
    x = np.arange(len(kinds))
    for i, report in enumerate(reports):
        recall = [report.figures.get(k, {}).get("recall") for k in kinds]
        events = [report.figures.get(k, {}).get("events", 0) for k in kinds]
        bars = recall_ax.bar(x + i * width, [r or 0 for r in recall], width,
                             label=report.detector)
        for bar, r, n in zip(bars, recall, events, strict=True):
            recall_ax.annotate("-" if r is None else f"{r:.2f} ({n})",
                               (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                               ha="center", va="bottom", fontsize=6, rotation=90)
        median = [report.figures.get(k, {}).get("ttd_s_median") for k in kinds]
        p90 = [report.figures.get(k, {}).get("ttd_s_p90") for k in kinds]
        xs = x + i * width
        ttd_ax.bar(xs, [m if m is not None else 0 for m in median], width,
                   label=f"{report.detector} median")
        ttd_ax.scatter(xs, [p if p is not None else np.nan for p in p90], marker="_", s=200,
                       color="black", zorder=3, label="p90" if i == 0 else None)
    for ax, title in ((recall_ax, "recall per kind (events)"),
                      (ttd_ax, "time to detect, seconds (bar: median)")):
        ax.set_xticks(x + width * (len(reports) - 1) / 2, kinds, rotation=30, ha="right",
                      fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    recall_ax.set_ylim(0, 1.3)
    _timeline(time_ax, reports[0])
    nab = reports[0].nab.get("standard", {}).get("normalized")
    overall = reports[0].figures["overall"]
    fig.suptitle(
        f"{reports[0].detector}: recall {_text(overall.get('recall'))}, precision "
        f"{_text(overall.get('precision'))}, NAB standard {_text(nab, '.1f')}, "
        f"{_text(overall.get('fp_per_device_hour'))} false alerts per device-hour",
        fontsize=11,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _text(value, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _timeline(ax, report: Report) -> None:
    spans, marks = report.spans, report.marks
    if spans is None or not len(spans):
        ax.set_title("no events", fontsize=10)
        return
    devices = spans[~spans["planned"]]["device"].value_counts().index.tolist()[:MAX_DEVICES]
    devices += [d for d in spans["device"].unique().tolist() if d not in devices][
        : max(0, MAX_DEVICES - len(devices))
    ]
    origin = int(spans["start"].min())
    if marks is not None and len(marks):
        origin = min(origin, int(marks["ts"].min()))
    hours = lambda ms: (np.asarray(ms, np.float64) - origin) / 3_600_000  # noqa: E731
    kinds = sorted(spans[~spans["planned"]]["kind"].unique().tolist())
    palette = dict(zip(kinds, [f"C{i}" for i in range(len(kinds))], strict=True))
    for row, device in enumerate(devices):
        mine = spans[spans["device"] == device]
        for span in mine.itertuples():
            colour = "#d1d5db" if span.planned else palette[span.kind]
            ax.barh(row, max(hours(span.end) - hours(span.start), 0.002), left=hours(span.start),
                    height=0.5, color=colour, edgecolor="none")
        if marks is not None:
            at = marks[marks["device"] == device]
            for verdict, colour in _VERDICT_COLOURS.items():
                ts = at[at["verdict"] == verdict]["ts"]
                if len(ts):
                    ax.scatter(hours(ts), np.full(len(ts), row + 0.38), marker="|", s=30,
                               color=colour, linewidths=0.8)
    ax.set_yticks(range(len(devices)), devices, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("hours from the first event or alert")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=k) for k, c in palette.items()]
    handles.append(Patch(color="#d1d5db", label="planned event"))
    for verdict, colour in _VERDICT_COLOURS.items():
        handles.append(Line2D([], [], marker="|", linestyle="", color=colour,
                              label=f"{verdict} alert"))
    ax.legend(handles=handles, fontsize=7, ncol=min(len(handles), 6), loc="upper center",
              bbox_to_anchor=(0.5, -0.12))
    ax.set_title(f"events and alerts of {report.detector} (at most {MAX_DEVICES} devices)",
                 fontsize=10)
