"""`python -m producer ctl`: send one control request to a running producer, return its answer
(the requests themselves live in common.control, which the broadcaster uses too)."""

from __future__ import annotations

from pathlib import Path

from common import shards
from common.bus import Security
from common.control import ask, ask_all
from common.errors import StartupError
from common.ready import instance_files

__all__ = ["ask", "ask_all", "describe", "formation"]


def formation(
    setting: str, security: Security, timeout: float, ready_template: str | None = None
) -> list[str]:
    """Every producer's control endpoint, when nothing said how many producers there are:
    from their ready files if they write them (the endpoints actually bound), else from
    producer 1, whose status names the count (its shard, `1/N`). One endpoint if neither
    tells (producer 1 does not answer: the request then reports it)."""
    found = instance_files(ready_template, "producer") if ready_template else {}
    if 1 in found and all(info.get("control") for info in found.values()):
        return [str(found[i]["control"]) for i in sorted(found)]
    first = shards.endpoints(setting, 1)[0]
    try:
        reply = ask(first, {"cmd": "status"}, timeout, security)
        count = shards.parse_shard(str(reply.get("shard", "1/1")))
    except (StartupError, ValueError):
        return [first]
    if count is None or count.count == 1:
        return [first]
    return shards.endpoints(setting, count.count)


def describe(endpoints: list[str], statuses: list[dict], here: Path | None = None) -> list[str]:
    """Lines that say which pipeline `ctl` talks to: each producer's endpoint, pid, seed and
    the directory it runs in, and a note if that is not this directory."""
    here = Path.cwd() if here is None else here
    answered = [(e, s) for e, s in zip(endpoints, statuses, strict=True) if "pid" in s]
    if not answered:
        return []
    places = {s.get("cwd") for _, s in answered}
    seeds = {s.get("seed") for _, s in answered if s.get("seed") is not None}
    where = places.pop() if len(places) == 1 else None
    count = f"{len(endpoints)} producers" if len(endpoints) > 1 else "the producer"
    about = f"talking to {count} of the pipeline in {where}" if where else f"talking to {count}"
    if len(seeds) == 1:
        about += f" (seed {seeds.pop()})"
    elif seeds:
        about += f" (seeds {', '.join(map(str, sorted(seeds)))}: not one series)"
    parts = [f"{s.get('shard', '?')} at {e} (pid {s['pid']})" for e, s in answered]
    lines = [f"{about}: {', '.join(parts)}"]
    elsewhere = sorted({str(s.get("cwd")) for _, s in answered} - {str(here)})
    if elsewhere:
        lines.append(
            f"note: it runs in {', '.join(elsewhere)}, not in this directory ({here}): "
            "another pipeline than this directory's settings describe?"
        )
    return lines
