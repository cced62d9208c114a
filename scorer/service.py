"""The live scorer: the truth from the bus, detectors' alerts from the broadcasters, a
report per detector refreshed every few seconds and written when it stops (or on SIGUSR1)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime

from common import metrics
from common.bus import AlertReceiver
from common.metrics import Figure
from common.ready import Readiness
from scorer.alertbook import AlertBook
from scorer.config import ScorerConfig
from scorer.intake import SampleIntake
from scorer.matching import alerts_frame
from scorer.report import Report, evaluate
from scorer.table import render
from scorer.truth import TruthTracker

log = logging.getLogger(__name__)


class Scorer:
    """What the loops share: the truth so far, the alerts so far, the latest reports."""

    def __init__(self, config: ScorerConfig) -> None:
        self.config = config
        self.truth = TruthTracker()
        self.book = AlertBook(config.max_alerts)
        self.intake: SampleIntake | None = None
        self.reports: dict[str, Report] = {}
        self.refreshed_in = 0.0  # seconds the last refresh took

    def refresh(self) -> dict[str, Report]:
        """Every detector's report on what is known now."""
        return self._evaluate(*self.snapshot())

    def snapshot(self):
        """What is known now, copied (cheap), so that it can be scored off the loop."""
        return time.monotonic(), self.truth.truth(), self.book.records()

    def _evaluate(self, started, truth, records) -> dict[str, Report]:
        frames = self.book.frames(records)
        self.reports = {
            name: evaluate(truth, frame, self.config.settings, name)
            for name, frame in sorted(frames.items())
        }
        self.refreshed_in = time.monotonic() - started
        return self.reports

    async def refresh_aside(self) -> dict[str, Report]:
        """refresh(), the scoring done in a thread: the loop goes on taking samples and
        alerts meanwhile (the copy of what is known is taken on the loop)."""
        return await asyncio.to_thread(self._evaluate, *self.snapshot())

    def document(self) -> dict:
        """The JSON report: the run's counts and each detector's report."""
        reports = self.refresh()
        intake = self.intake
        run = {
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "samples": self.truth.samples,
            "samples_caught_up": intake.refilled if intake else 0,
            "samples_missed": intake.missed if intake else 0,
            "gaps": intake.gaps() if intake else {},
            "alerts_received": self.book.received,
            "alerts_lost": self.book.lost,
            "alerts_malformed_messages": self.book.malformed,
            "alerts_dropped": self.book.dropped,
        }
        if not reports:
            run["truth"] = evaluate(self.truth.truth(), alerts_frame([]),
                                    self.config.settings, "none").truth
        return {"run": run, "detectors": {n: r.to_dict() for n, r in reports.items()}}

    def write(self) -> None:
        """Write the JSON report, then its picture."""
        body = self.document()
        path = self.config.report
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(body, indent=1, default=_plain) + "\n")
        partial.replace(path)
        log.info("report written to %s (%d detector(s))", path, len(self.reports))
        if self.config.picture is not None and self.reports:
            from scorer.picture import draw

            draw(list(self.reports.values()), self.config.picture)
            log.info("picture written to %s", self.config.picture)

    def figures(self) -> list[Figure]:
        intake = self.intake
        out = [
            Figure("samples_received", "Samples received from ZeroMQ",
                   intake.received if intake else 0, True),
            Figure("samples_scored", "Samples in the truth the scores are computed on (each "
                   "once)", self.truth.samples, True),
            Figure("samples_refilled", "Samples refilled from the producers' history",
                   intake.refilled if intake else 0, True),
            Figure("samples_missed", "Samples published, or maybe published, and not in the "
                   "truth (every gap reason but not_produced and invalid_input)",
                   intake.missed if intake else 0, True),
            Figure("alerts_received", "Alerts received from broadcasters", self.book.received,
                   True),
            Figure("alerts_lost", "Alerts lost between broadcasters and the scorer",
                   self.book.lost, True),
            Figure("alerts_dropped", "Alerts past --max-alerts, not kept", self.book.dropped, True),
            Figure("scorer_refresh_seconds", "Seconds the last refresh of the scores took",
                   self.refreshed_in),
            Figure("malformed_messages", "Malformed ZeroMQ messages dropped",
                   (intake.malformed if intake else 0) + self.book.malformed, True),
        ]
        if intake is not None:
            for reason, count in intake.gaps().items():
                out.append(Figure("gap_samples", "Samples not in the truth, by gap reason "
                                  "(delivery's vocabulary)", count["samples"], True,
                                  labels=(("reason", reason),)))
        for name, report in self.reports.items():
            for kind, values in report.figures.items():
                labels = (("detector", name), ("kind", kind))
                for key, title in (("recall", "Share of events detected"),
                                   ("precision", "Share of alerts that detect an event"),
                                   ("ttd_s_median", "Median seconds to detect"),
                                   ("ttd_s_p90", "90th percentile of seconds to detect"),
                                   ("range_f1", "Range-based F1 (Tatbul et al.)"),
                                   ("event_f1", "Event-wise F1")):
                    if values.get(key) is not None:
                        out.append(Figure(f"scorer_{key}", title, values[key], labels=labels))
                out.append(Figure("scorer_events", "Events (incidents once)", values["events"],
                                  labels=labels))
            for profile, values in report.nab.items():
                if values["normalized"] is not None:
                    out.append(Figure("scorer_nab", "NAB score, normalised", values["normalized"],
                                      labels=(("detector", name), ("profile", profile))))
            fp = report.figures["overall"].get("fp_per_device_hour")
            if fp is not None:
                out.append(Figure("scorer_false_per_device_hour", "False alerts per device-hour",
                                  fp, labels=(("detector", name),)))
        return out


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON: {value!r}")


def _preload_plotting() -> None:
    """Import matplotlib now, in a thread: at the stop, drawing is then all that is left
    (its import alone takes a second or more, of the 5 s a supervisor waits)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        log.warning("matplotlib is not installed: no picture")


async def run(config: ScorerConfig, stop: asyncio.Event) -> None:
    """Score until `stop` is set, then write the report. Raises StartupError on bad settings."""
    scorer = Scorer(config)
    if config.picture is not None:
        threading.Thread(target=_preload_plotting, daemon=True).start()
    with ExitStack() as cleanup:
        receiver = AlertReceiver(config.zmq_alerts, config.security)
        cleanup.callback(receiver.close)
        intake = scorer.intake = SampleIntake(config.zmq_pub.split(","),
                                              config.zmq_catchup.split(","), config.security)
        cleanup.callback(intake.close)
        scrape = metrics.serve(config.metrics_port, metrics.registry(scorer.figures))
        if scrape is not None:
            cleanup.callback(scrape.close)
        log.info("scoring samples from %s against alerts on %s", config.zmq_pub,
                 receiver.endpoint)
        loop = asyncio.get_running_loop()
        asked = asyncio.Event()
        # before the ready file: whoever reads it may ask for a report at once
        loop.add_signal_handler(signal.SIGUSR1, asked.set)
        cleanup.callback(loop.remove_signal_handler, signal.SIGUSR1)
        ready = Readiness(config.ready_file, "scorer")
        ready.announce(alerts=receiver.endpoint, pub=config.zmq_pub,
                       metrics_port=scrape.port if scrape else 0, report=str(config.report))
        cleanup.callback(ready.withdraw)
        tasks = [
            asyncio.create_task(_samples(scorer, intake, stop)),
            asyncio.create_task(_alerts(scorer, receiver, stop)),
            asyncio.create_task(_refresh(scorer, stop, asked)),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # what is already queued counts too: drain the alerts and samples that arrived
        for frames in await _drain(receiver):
            scorer.book.add(frames)
        for batch in await intake.receive(0, stop):
            scorer.truth.add(batch)
        intake.finish()
        scorer.write()


async def _drain(receiver: AlertReceiver) -> list[list[bytes]]:
    """The alerts messages already queued."""
    out: list[list[bytes]] = []
    while True:
        try:
            got = await asyncio.wait_for(receiver.receive(asyncio.Event(), 10_000), 0.05)
        except TimeoutError:
            return out
        out += got


async def _samples(scorer: Scorer, intake: SampleIntake, stop: asyncio.Event) -> None:
    next_stats = time.monotonic() + scorer.config.stats_interval
    while not stop.is_set():
        for batch in await intake.receive(1.0, stop):
            scorer.truth.add(batch)
        if time.monotonic() >= next_stats:
            next_stats += scorer.config.stats_interval
            log.info("received %d samples (%d missed), %d alerts (%d lost)", intake.received,
                     intake.missed, scorer.book.received, scorer.book.lost)


async def _alerts(scorer: Scorer, receiver: AlertReceiver, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for frames in await receiver.receive(stop):
            scorer.book.add(frames)


async def _refresh(scorer: Scorer, stop: asyncio.Event, asked: asyncio.Event) -> None:
    """Every `every` seconds: the scores for /metrics and the table; on SIGUSR1, the report."""
    config = scorer.config
    while not stop.is_set():
        # a refresh holds the loop while it runs: never more than a sixth of the time
        wait = max(config.every, 5 * scorer.refreshed_in)
        try:
            await asyncio.wait_for(asked.wait(), wait)
        except TimeoutError:
            pass
        if stop.is_set():
            return
        if asked.is_set():
            asked.clear()
            scorer.write()
            continue
        reports = await scorer.refresh_aside()
        if config.table:
            text = "\n\n".join(render(r) for r in reports.values()) or (
                f"no alerts yet; {scorer.truth.samples} samples, "
                f"{len(scorer.truth.truth().anomalies)} event(s) so far"
            )
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            sys.stdout.flush()



