"""Shared fixtures: real processes (broker, workers) on loopback, always cleaned up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.sinks.embedded_clickhouse import (
    CLICKHOUSE_SERVER_BIN,
    ClickHouseServer,
    clickhouse_server_available,
)
from agents.sinks.embedded_redis import REDIS_SERVER_BIN, RedisServer, redis_server_available
from config.settings import Settings
from streams.admin import ensure_topics
from streams.broker import BrokerProcess, _die_with_parent, free_port, local_broker

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LIVEPULSE_SHARED_DIR", REPO.parent / "shared"))


def require(condition: bool, what: str) -> None:
    """Skip locally when a service is missing; in CI a missing service is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required service missing in CI: {what}")
    pytest.skip(f"service missing: {what}")


_private_redis: list[RedisServer] = []


def service_redis_url() -> str:
    """LIVEPULSE_TEST_REDIS_URL if set, else one private redis-server for the whole session
    (started on first use; it dies with the test process)."""
    external = os.environ.get("LIVEPULSE_TEST_REDIS_URL")
    if external:
        return external
    if not _private_redis:
        require(redis_server_available(), f"redis-server binary ({REDIS_SERVER_BIN})")
        server = RedisServer()
        server.start()
        _private_redis.append(server)
    return _private_redis[0].url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return service_redis_url()


@pytest.fixture(scope="session")
def clickhouse_url() -> Iterator[str]:
    """LIVEPULSE_TEST_CLICKHOUSE_URL if set, else a private clickhouse-server for the
    session (Debian's package; in CI a missing binary is a failure). Tests use their own
    database names on it (replace the URL path)."""
    external = os.environ.get("LIVEPULSE_TEST_CLICKHOUSE_URL")
    if external:
        yield external
        return
    require(clickhouse_server_available(), f"clickhouse-server binary ({CLICKHOUSE_SERVER_BIN})")
    with ClickHouseServer() as server:
        yield server.url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test module that sets ``BROKERS = ("tansu", "kafka")`` runs its tests that take
    the ``broker`` fixture once per broker (ids ``[tansu]`` / ``[kafka]``); the others run
    on the embedded Tansu broker only."""
    if "broker" in metafunc.fixturenames:
        kinds = getattr(metafunc.module, "BROKERS", ("tansu",))
        metafunc.parametrize("broker", kinds, indirect=True, scope="session")


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker of each kind for the whole session: embedded Tansu, or Apache Kafka
    (KRaft, jars from Maven Central: Java 17 and Maven required; in CI a failure)."""
    kind = getattr(request, "param", "tansu")
    log_path = tmp_path_factory.mktemp(f"broker-{kind}") / "broker.log"
    if kind == "kafka":
        import shutil

        require(bool(shutil.which("java")), "java (Apache Kafka broker)")
    running = local_broker(kind, log_path=log_path)
    running.start(timeout=180.0 if kind == "kafka" else 20.0)
    try:
        yield running
    finally:
        running.stop()


def broker_engine(broker: BrokerProcess) -> str:
    """``tansu`` or ``kafka``: the kind of a ``broker`` fixture (workers tune fetches by it)."""
    from streams.kafka_broker import KafkaBroker

    return "kafka" if isinstance(broker, KafkaBroker) else "tansu"


@dataclass
class WorkerHandle:
    process: subprocess.Popen[bytes]
    settings: Settings
    web_url: str
    log_path: Path

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def unique_settings(tmp_path: Path, broker: BrokerProcess, **overrides: object) -> Settings:
    """Settings with their own topic prefix, group and Redis namespace, so tests never share
    state."""
    tag = f"t{os.getpid()}x{time.monotonic_ns() % 10**9}"
    values = {
        "kafka_url": broker.bootstrap, "topic_prefix": tag, "app_id": tag,
        "data_dir": str(tmp_path / "data"), "web_port": free_port(), "partitions": 2,
        "insights_min_interval_ms": 100, "log_level": "info",
        "redis_url": service_redis_url(), "redis_namespace": tag,
        "broker_engine": broker_engine(broker),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def start_worker(settings: Settings, log_path: Path) -> WorkerHandle:
    asyncio.run(ensure_topics(settings))
    # unbuffered: a worker killed by the test (or at teardown) leaves its last lines
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "worker"], cwd=REPO, env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    return WorkerHandle(process, settings, f"http://{settings.web_host}:{settings.web_port}",
                        log_path)


def wait_ready(worker: WorkerHandle, timeout: float = 120.0) -> None:
    import json
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise AssertionError(f"worker exited early:\n{worker.log()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{worker.web_url}/healthz", timeout=2) as resp:
                if json.load(resp).get("assigned_partitions", 0) > 0:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"worker not ready in {timeout} s:\n{worker.log()[-4000:]}")


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[object]:
    started: list[WorkerHandle] = []

    def factory(settings: Settings, name: str = "worker") -> WorkerHandle:
        handle = start_worker(settings, tmp_path / f"{name}.log")
        started.append(handle)
        wait_ready(handle)
        return handle

    yield factory
    for handle in started:
        if handle.process.poll() is None:
            handle.process.kill()
            handle.process.wait(10)
