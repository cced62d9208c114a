"""Who else serves this WebSocket port: broadcasters of one pipeline share it, no stranger does.

With SO_REUSEPORT (`--reuse-port`, on by default) the kernel lets any process join a port
and spreads new connections over all of them: a broadcaster of another pipeline that
joined would hand some clients another stream, and /healthz would alternate between the
two. So each broadcaster names its pipeline in /healthz (a digest of the producers'
endpoints it relays, which identify one pipeline on a machine) and, before and right after
it starts listening, asks the port's /healthz who serves it: another pipeline's
broadcaster, or a server sharing the port that does not say its pipeline, makes it refuse
to start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import ssl
from dataclasses import dataclass

from common.errors import StartupError

PROBE_TIMEOUT_S = 1.0
PROBES_AFTER_LISTENING = 8  # each a new connection, which the kernel gives to any listener
_HINT = "choose another port with --ws-port (STREAM_WS_PORT)"


def pipeline_id(zmq_pub: str, zmq_catchup: str) -> str:
    """A short digest of the endpoints a broadcaster relays from: broadcasters of one
    pipeline have the same, another pipeline's producers (on this machine) other ones.
    ipc paths are made absolute, so the same relative path in two directories differs."""
    endpoints = []
    for endpoint in [*zmq_pub.split(","), *zmq_catchup.split(",")]:
        endpoint = endpoint.strip()
        if endpoint.startswith("ipc://"):
            endpoint = "ipc://" + os.path.abspath(endpoint.removeprefix("ipc://"))
        endpoints.append(endpoint)
    return hashlib.blake2b("\n".join(endpoints).encode(), digest_size=6).hexdigest()


@dataclass(frozen=True)
class Peer:
    """What the port's /healthz said: the answering process and its pipeline ("" if none)."""

    pid: int | None
    pipeline: str


async def probe(host: str, port: int, tls: bool) -> Peer | None:
    """Ask whoever serves host:port for /healthz; None if nothing listens there."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # only asking who it is, never sending data
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context), PROBE_TIMEOUT_S
        )
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    try:
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(64 * 1024), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError, ssl.SSLError):
        return Peer(None, "")
    finally:
        writer.close()
    body = answer.partition(b"\r\n\r\n")[2]
    try:
        health = json.loads(body)
        return Peer(int(health["pid"]), str(health.get("pipeline") or ""))
    except (ValueError, KeyError, TypeError):
        return Peer(None, "")


def check(peer: Peer | None, mine: str, where: str) -> None:
    """StartupError unless the port is free or served by this pipeline."""
    if peer is None or peer.pipeline == mine:
        return
    if not peer.pipeline:
        raise StartupError(
            f"cannot listen on {where}: it is served by something that does not say its "
            f"pipeline (not a broadcaster of this version): {_HINT}"
        )
    raise StartupError(
        f"cannot listen on {where}: a broadcaster of another pipeline serves it (pid "
        f"{peer.pid}, pipeline {peer.pipeline}; this one's is {mine}): {_HINT}, or stop it"
    )


async def check_before(host: str, port: int, tls: bool, mine: str) -> None:
    """Before listening on a shared port: refuse if another pipeline's broadcaster has it.
    Whatever else holds it is left to the bind, which fails plainly unless it shares the
    port, and to `check_after`."""
    if not port:
        return
    peer = await probe(host, port, tls)
    if peer is not None and peer.pipeline:
        check(peer, mine, f"{host}:{port}")


async def check_after(host: str, port: int, tls: bool, mine: str) -> None:
    """Once listening: ask a few times more, each a new connection the kernel may give to
    any listener, in case another pipeline's broadcaster started at the same moment."""
    if not port:
        return  # a port the kernel chose is this process's alone
    for _ in range(PROBES_AFTER_LISTENING):
        peer = await probe(host, port, tls)
        if peer is None or peer.pid is None or peer.pid == os.getpid():
            continue  # itself, or an answer it could not read: nothing to tell
        check(peer, mine, f"{host}:{port}")
