"""The local brokers (embedded Tansu, Apache Kafka KRaft): start, answer, create topics,
and never outlive their owner."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.settings import Settings
from streams.admin import ensure_topics, list_topics
from streams.broker import BROKER_ENGINES, EmbeddedBroker, local_broker
from streams.topics import topic_names
from tests.conftest import REPO

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("engine", BROKER_ENGINES)
def test_start_create_topics_stop(tmp_path: Path, engine: str) -> None:
    broker = local_broker(engine, log_path=tmp_path / "b.log")
    bootstrap = broker.start()
    workdir = getattr(broker, "workdir", None)
    pid = broker.process.pid if broker.process else -1
    try:
        settings = Settings(kafka_url=bootstrap, topic_prefix="bt")
        created = asyncio.run(ensure_topics(settings))
        assert set(created) == {s.name for s in topic_names(settings).specs()}
        assert asyncio.run(ensure_topics(settings)) == []  # idempotent
        assert set(created) <= set(asyncio.run(list_topics(bootstrap)))
    finally:
        broker.stop()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
        f"/proc/{pid}/status").read_text().lower()
    assert workdir is None or not workdir.exists()  # Kafka's log dir is removed


@pytest.mark.parametrize("engine", BROKER_ENGINES)
def test_broker_dies_with_its_parent_even_on_kill9(tmp_path: Path, engine: str) -> None:
    """`livepulse broker` killed with SIGKILL leaves no broker process behind."""
    proc = subprocess.Popen([sys.executable, "-m", "agents.cli", "broker", "--engine", engine],
                            cwd=REPO,
                            env={**os.environ, "LIVEPULSE_KAFKA_URL": ""},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    bootstrap = proc.stdout.readline().strip()
    assert ":" in bootstrap
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
    assert children, "no broker child process found"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{c}").exists() for c in children)


def test_topics_command_with_url_starts_no_broker(broker: EmbeddedBroker) -> None:
    env = {**os.environ, "LIVEPULSE_KAFKA_URL": broker.bootstrap, "LIVEPULSE_TOPIC_PREFIX": "cli"}
    out = subprocess.run([sys.executable, "-m", "agents.cli", "topics", "create"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "embedded broker" not in out.stderr
    assert "cli.live-events" in out.stdout
