"""A formation of several producers runs one series: producers 2..N started without a seed
learn producer 1's (its seed, tick grid and seq numbering) from its control endpoint.

honcho tells an instance only its own name, and a seed drawn by each producer would make
the formation several unrelated simulations. Producer 1 draws (or keeps, in its state
file) the seed as a lone producer does; the others ask it for its series before they
publish, waiting for it if it is not up yet.
"""

from __future__ import annotations

import asyncio
import logging

from common import control
from common.bus import Dealer
from common.errors import StartupError
from common.ready import instance_files
from common.shards import Shard, own_endpoint
from producer.config import ProducerConfig
from producer.sources import series as series_store
from producer.sources.series import Series

log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 1.0
RETRY_S = 0.3
REMIND_S = 10.0


def needs_formation_series(config: ProducerConfig) -> bool:
    """Producer I > 1 of a simulated formation, with no seed of its own."""
    return config.source == "sim" and config.seed is None and config.shard.index > 1


def first_control(config: ProducerConfig) -> str:
    """Producer 1's control endpoint: from its ready file when there is one (it names the
    endpoint actually bound), else from the settings, as producer 1 derives it."""
    if config.ready_file:
        found = instance_files(config.ready_file, "producer")
        if 1 in found and found[1].get("control"):
            return str(found[1]["control"])
    return own_endpoint(config.zmq_control, Shard(1, config.shard.count))


async def learn(config: ProducerConfig, stop: asyncio.Event) -> Series | None:
    """Producer 1's series, asked for until it answers (None if stopped first).

    StartupError if producer 1 answers with a series this producer cannot share: another
    source, fleet or scenario (the formation's settings differ)."""
    endpoint = first_control(config)
    dealer = Dealer(endpoint, config.security)
    waited = 0.0
    try:
        while not stop.is_set():
            await dealer.send([control.encode({"cmd": "series"})])
            frames = await dealer.receive(ASK_TIMEOUT_S)
            if frames is not None:
                return _check(config, endpoint, _reply(endpoint, frames))
            if waited == 0.0 or waited >= REMIND_S:
                log.info(
                    "waiting for producer 1 at %s to learn the formation's series "
                    "(give --seed to start on a series of this producer's own)",
                    endpoint,
                )
                waited = 0.0
            waited += ASK_TIMEOUT_S + RETRY_S
            try:
                await asyncio.wait_for(stop.wait(), RETRY_S)
            except TimeoutError:
                pass
        return None
    finally:
        dealer.close()


def _reply(endpoint: str, frames: list[bytes]) -> dict:
    try:
        reply = control.decode_reply(frames[0])
    except control.ControlError as exc:
        raise StartupError(f"bad answer from producer 1 at {endpoint}: {exc}") from None
    if not reply.get("ok"):
        raise StartupError(
            f"producer 1 at {endpoint} does not tell its series ({reply.get('error')}): "
            "give every producer the same --seed (STREAM_SEED)"
        )
    return reply


def _check(config: ProducerConfig, endpoint: str, reply: dict) -> Series:
    """The series in producer 1's reply, if this producer can share it."""
    try:
        formation = series_store.from_dict(reply["series"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StartupError(f"bad answer from producer 1 at {endpoint}: {exc}") from None
    scenario = config.scenario.name if config.scenario else ""
    mine = {"source": config.source, "devices": config.devices, "scenario": scenario}
    theirs = {
        "source": formation.source,
        "devices": formation.devices,
        "scenario": formation.scenario,
    }
    for name, value in mine.items():
        if theirs[name] != value:
            raise StartupError(
                f"producer 1 at {endpoint} runs {name} {theirs[name]!r}, this producer was "
                f"given {value!r}: a formation shares one series, so give every producer the "
                "same settings"
            )
    log.info(
        "running the formation's series: seed %d, from producer 1 at %s", formation.seed, endpoint
    )
    return formation
