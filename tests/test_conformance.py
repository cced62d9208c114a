"""WebSocket protocol conformance: the Autobahn|Testsuite fuzzing client against our settings.

Every case must end no worse than against the websockets library's own defaults in the same
run. Cases 9.* (limits and performance; the Python 2 fuzzer is the bottleneck and times
out) and 12.*/13.* (permessage-deflate, which the broadcaster turns off) are left out.

Autobahn runs on Python 2.7 only. Point STREAM_AUTOBAHN at a directory holding
`python` (a 2.7 interpreter) and `site/` (autobahntestsuite installed with --target);
`.ci/run` prepares one. Without it the test is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Proc

AUTOBAHN = os.environ.get("STREAM_AUTOBAHN")
# Passes rank 0, whatever their flavour: whether a case ends OK or NON-STRICT depends on
# timing (how soon a protocol error is noticed after echoing the frame before it), so the
# two flip between runs of one server. Anything else (FAILED, WRONG CODE, ...) ranks 2.
RANK = {"OK": 0, "NON-STRICT": 0, "INFORMATIONAL": 0, "UNIMPLEMENTED": 0}


# tests/autobahn_echo.py with port 0 for both servers (the kernel picks free ones), each
# server's port printed as it is bound: `port N` for ours, then the baseline's, then `ready`.
ECHO_ON_FREE_PORTS = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
import autobahn_echo
bind = autobahn_echo.serve
async def serve(*args, **kwargs):
    server = await bind(*args, **kwargs)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    return server
autobahn_echo.serve = serve
asyncio.run(autobahn_echo.main(0, 0))
"""


@pytest.mark.slow
@pytest.mark.skipif(not AUTOBAHN, reason="STREAM_AUTOBAHN is not set (see .ci/run)")
def test_autobahn_fuzzing_client(tmp_path: Path):
    """No Autobahn fuzzing case ends worse against the broadcaster's WebSocket settings than
    against the websockets library's defaults."""
    server = Proc(["-c", ECHO_ON_FREE_PORTS, str(REPO / "tests")], tmp_path)
    try:
        server.wait_for("^ready$", stream="out")
        ports = [int(line.split()[1]) for line in server.out if line.startswith("port ")]
        assert len(ports) == 2, server.out
        for agent, port in zip(("ours", "baseline"), ports, strict=True):
            _fuzz(tmp_path, agent, port)
    finally:
        server.kill()
    ours, baseline = (
        json.loads((tmp_path / agent / "index.json").read_text())[agent]
        for agent in ("ours", "baseline")
    )
    assert len(ours) > 200 and set(ours) == set(baseline)
    worse = {
        case: (ours[case][key], baseline[case][key])
        for case in ours
        for key in ("behavior", "behaviorClose")
        if RANK.get(ours[case][key], 2) > RANK.get(baseline[case][key], 2)
    }
    assert not worse, worse
    failed = sorted(c for c in ours if RANK.get(ours[c]["behavior"], 2) == 2)
    print(
        f"autobahn: {len(ours)} cases, none worse than the library's defaults; "
        f"failed in both: {failed}",
        file=sys.stderr,
    )


def _fuzz(cwd: Path, agent: str, port: int) -> None:
    spec = {
        "outdir": str(cwd / agent),
        "servers": [{"agent": agent, "url": f"ws://127.0.0.1:{port}"}],
        "cases": ["*"],
        "exclude-cases": ["9.*", "12.*", "13.*"],
        "exclude-agent-cases": {},
    }
    (cwd / f"{agent}.json").write_text(json.dumps(spec))
    base = Path(AUTOBAHN or "")
    # addsitedir, not PYTHONPATH: zope.interface needs its .pth file processed.
    launcher = (
        "import site, sys; site.addsitedir(sys.argv[1]);"
        f"sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', '{agent}.json'];"
        "from autobahntestsuite.wstest import run; run()"
    )
    subprocess.run(
        [str(base / "python"), "-c", launcher, str(base / "site")],
        cwd=cwd,
        capture_output=True,
        timeout=300,
        check=True,
    )
