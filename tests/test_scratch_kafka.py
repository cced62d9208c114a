from __future__ import annotations
import random, time, json, shutil
from pathlib import Path
import pytest
from bridging import bridge, settled, gap_rows, logged
from brokers import Kafka, by_device, read_topic
from conftest import Pipeline
from test_bridge_kafka import kafka, assert_exact  # noqa

@pytest.mark.parametrize("n", range(6))
def test_sigkill_dbg(pipeline: Pipeline, kafka: Kafka, n: int):
    rng = random.Random()
    pipeline.producer("--rate", "100", "--devices", "100", "--anomaly-rate", "60")
    logger = pipeline.logger("--flush-interval", "0.1")
    args = ("--topic", f"killed{n}", "--log-level", "DEBUG")
    procs = [bridge(pipeline, kafka.url(), *args)]
    for _ in range(3):
        time.sleep(rng.uniform(0.5, 2.0))
        procs[-1].kill()
        procs.append(bridge(pipeline, kafka.url(), *args))
    time.sleep(1.5)
    pipeline.procs[0].stop()
    settled(procs[-1])
    procs[-1].stop()
    logger.stop()
    out = Path(f"/tmp/kdbg/{n}"); shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
    for i, p in enumerate(procs):
        (out / f"bridge{i}.log").write_text("\n".join(p.lines))
    shutil.copy(pipeline.cwd / "bridge.gaps.csv", out / "gaps.csv")
    recs = read_topic(kafka.bootstrap, f"killed{n}")
    (out / "topic.json").write_text(json.dumps(recs))
    assert_exact(recs, pipeline, 100)
    assert not gap_rows(pipeline.cwd / "bridge.gaps.csv")


@pytest.mark.parametrize("n", range(2))
def test_stopped_dbg(pipeline: Pipeline, tmp_path: Path, n: int):
    own_kafka = Kafka(tmp_path / "k")
    out = Path(f"/tmp/kdbg/stop{n}"); shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
    try:
        pipeline.producer("--rate", "100", "--devices", "20")
        logger = pipeline.logger("--flush-interval", "0.1")
        roomy = bridge(pipeline, own_kafka.url(), "--log-level", "DEBUG", gaps="roomy.gaps.csv")
        tight = bridge(pipeline, own_kafka.url(), "--log-level", "DEBUG",
            *("--max-unsent", "2000", "--topic", "tight"), gaps="tight.gaps.csv")
        time.sleep(2)
        node = own_kafka.nodes[0]
        node.stop()
        time.sleep(5)
        own_kafka.restart(node)
        time.sleep(2)
        pipeline.procs[0].stop()
        try:
            settled(roomy, tight, timeout=60)
        finally:
            for name, p in (("roomy", roomy), ("tight", tight)):
                (out / f"{name}.log").write_text("\n".join(p.lines))
    finally:
        own_kafka.close()
