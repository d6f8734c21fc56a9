"""Secured connections and access, end to end with real processes.

* A worker bound to 0.0.0.0 with an API token talks TLS to Kafka (through a TLS-terminating
  proxy in front of Tansu, whose own TLS listener cannot be configured: see README
  "Security"), TLS + AUTH to Redis and TLS + user/password to ClickHouse; the profile keys
  land in Redis, history rows in ClickHouse, and the HTTP API answers only to the right
  tokens.
* A worker given wrong Redis and ClickHouse passwords keeps processing and reports the refusal
  explicitly in its log and metrics.
* A worker bound beyond loopback without a token refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from aiokafka.errors import KafkaConnectionError

from agents.sinks.clickhouse import history_counts
from agents.sinks.embedded_clickhouse import ClickHouseServer, clickhouse_server_available
from agents.sinks.embedded_redis import RedisServer, redis_server_available
from agents.web.auth import host_token
from config.settings import Settings
from streams.admin import list_topics
from streams.broker import _die_with_parent, free_port, locate_binary
from streams.security import kafka_client_options
from streams.simulator import Simulator, run_simulation
from streams.topics import topic_names
from tests.chromium import Chromium, find_chromium
from tests.conftest import REPO, WorkerHandle, require, start_worker, unique_settings, wait_ready
from tests.integration.test_serving import wait_for

API_TOKEN = "api-token-for-tests-7Kp2vQ9mZ4rT8wY1nB6cF3hJ5gD0sLa"
HOST_KEY = "host-key-for-tests-7Kp2vQ9mZ4rT8wY1nB6cF3hJ5gD0sLa"
REDIS_PASSWORD = "redis-pass-for-tests"
CLICKHOUSE_USER, CLICKHOUSE_PASSWORD = "lp", "clickhouse-pass-for-tests"
SECRETS = (API_TOKEN, HOST_KEY, REDIS_PASSWORD, CLICKHOUSE_PASSWORD)


# ------------------------------------------------------------------ services
@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1/localhost (it is its own CA) and its key."""
    require(shutil.which("openssl") is not None, "openssl")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(cert), str(key)


class TlsProxy:
    """A TLS-terminating TCP proxy (in a thread): TLS on ``port``, plaintext to ``target``."""

    def __init__(self, target_port: int, cert: str, key: str) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.loop = asyncio.new_event_loop()
        self.handshakes = 0
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._started.wait(10), "TLS proxy did not start"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.context))
        self._started.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture(scope="module")
def tls_kafka(tmp_path_factory: pytest.TempPathFactory,
              tls_files: tuple[str, str]) -> Iterator[SimpleNamespace]:
    """Tansu on a plaintext port, advertising the TLS proxy's port: every client connection
    (bootstrap and broker) goes through TLS."""
    cert, key = tls_files
    plain_port = free_port()
    proxy = TlsProxy(plain_port, cert, key)
    proxy.start()
    log_path = tmp_path_factory.mktemp("tls-broker") / "broker.log"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [locate_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{plain_port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{proxy.port}",
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"}, preexec_fn=_die_with_parent)
    bootstrap = f"127.0.0.1:{proxy.port}"
    settings = Settings(kafka_url=bootstrap, kafka_security_protocol="SSL",
                        kafka_ssl_cafile=cert)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                asyncio.run(list_topics(bootstrap, kafka_client_options(settings)))
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield SimpleNamespace(bootstrap=bootstrap, proxy=proxy, cafile=cert)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        proxy.stop()


@pytest.fixture(scope="module")
def secured_redis(tls_files: tuple[str, str]) -> Iterator[RedisServer]:
    require(redis_server_available(), "redis-server binary")
    cert, key = tls_files
    with RedisServer(password=REDIS_PASSWORD, tls_cert_file=cert, tls_key_file=key) as server:
        yield server


@pytest.fixture(scope="module")
def password_redis() -> Iterator[RedisServer]:
    require(redis_server_available(), "redis-server binary")
    with RedisServer(password=REDIS_PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def secured_clickhouse(tls_files: tuple[str, str]) -> Iterator[ClickHouseServer]:
    """A user with a password, on the plain and on a TLS native port."""
    require(clickhouse_server_available(), "clickhouse-server binary")
    cert, key = tls_files
    with ClickHouseServer(users={CLICKHOUSE_USER: CLICKHOUSE_PASSWORD}, tls_cert_file=cert,
                          tls_key_file=key) as server:
        yield server


def clickhouse_url(server: ClickHouseServer, password: str, database: str,
                   tls: bool = False) -> str:
    port = server.secure_port if tls else server.tcp_port
    query = f"?secure=True&ca_certs={server.tls_cert_file}" if tls else ""
    return f"clickhouse://{CLICKHOUSE_USER}:{password}@127.0.0.1:{port}/{database}{query}"


# ------------------------------------------------------------------ HTTP helpers
def http(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = resp.read()
            status = resp.status
            kind = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        body, status, kind = error.read(), error.code, error.headers.get("Content-Type", "")
    return status, json.loads(body) if "json" in kind else body


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def stop(worker: WorkerHandle) -> None:
    with contextlib.suppress(Exception):
        worker.stop(30)
    if worker.process.poll() is None:
        worker.process.kill()
        worker.process.wait(10)


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("token, message", [
    ("", "0.0.0.0"), ("change-me", "a known default"), (" ", "whitespace only"),
    ("x", "shorter than 32 characters")])
def test_worker_refuses_a_public_bind_without_a_strong_token(tmp_path: Path, token: str,
                                                             message: str) -> None:
    env = {**os.environ, "LIVEPULSE_WEB_HOST": "0.0.0.0", "LIVEPULSE_API_TOKEN": token,
           "LIVEPULSE_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "agents.cli", "worker"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "LIVEPULSE_API_TOKEN" in done.stderr and message in done.stderr


def test_secured_worker_end_to_end(tmp_path: Path, tls_kafka: SimpleNamespace,
                                   secured_redis: RedisServer,
                                   secured_clickhouse: ClickHouseServer) -> None:
    tag = f"s{os.getpid()}x{time.monotonic_ns() % 10**9}"
    settings = unique_settings(
        tmp_path, tls_kafka, kafka_security_protocol="SSL", kafka_ssl_cafile=tls_kafka.cafile,
        redis_url=secured_redis.url, redis_tls_ca_file=tls_kafka.cafile,
        clickhouse_url=clickhouse_url(secured_clickhouse, CLICKHOUSE_PASSWORD, tag, tls=True),
        clickhouse_batch_interval_ms=200, pseudonym_key="pseudonym-key-for-tests-01234567",
        web_host="0.0.0.0", api_token=API_TOKEN, host_token_key=HOST_KEY)
    settings.check()
    handshakes_before = tls_kafka.proxy.handshakes
    worker = start_worker(settings, tmp_path / "worker.log")
    worker.web_url = f"http://127.0.0.1:{settings.web_port}"  # bound to 0.0.0.0
    try:
        wait_ready(worker)
        sim = Simulator(seed=5, rooms=3, users=300, items=200, bad_rate=0.0)
        stats = asyncio.run(run_simulation(
            tls_kafka.bootstrap, topic_names(settings), sim, rate=200.0, duration=3.0,
            client_options=kafka_client_options(settings)))
        assert stats.failed == 0
        # the broker is reachable only through TLS: the data checks below prove the worker's
        # clients (Faust, history sink, campaigns follower: no traceback in its log) use it
        assert tls_kafka.proxy.handshakes > handshakes_before
        with pytest.raises(KafkaConnectionError):  # a plaintext client gets nowhere
            asyncio.run(list_topics(tls_kafka.bootstrap, kafka_client_options(Settings())))

        # Redis over TLS with AUTH: profile keys appear
        client = redis.Redis.from_url(secured_redis.url, ssl_ca_certs=tls_kafka.cafile)
        profiles = f"{settings.redis_namespace}:user:*"
        wait_for(lambda: list(client.scan_iter(profiles, count=1000)), 60,
                 "profile keys in the TLS + AUTH Redis")

        # ClickHouse over TLS with user and password: history rows stored
        wait_for(lambda: sum(history_counts(settings.clickhouse_url).values()) > 0, 90,
                 "history rows written with user/password")

        # HTTP API: tokens
        base = worker.web_url
        assert http(f"{base}/healthz")[0] == 200
        status, body = http(f"{base}/api/rooms")
        assert (status, body) == (401, {"error": "unauthorized",
                                        "detail": "send Authorization: Bearer <token>"})
        assert http(f"{base}/metrics")[0] == 401
        assert http(f"{base}/metrics", API_TOKEN)[0] == 200
        rooms = wait_for(lambda: http(f"{base}/api/rooms", API_TOKEN)[1]["rooms"], 60,
                         "rooms listed with the API token")
        room = rooms[0]["room_id"]
        other = f"{room}-other"
        mine, theirs = host_token(HOST_KEY, room), host_token(HOST_KEY, other)
        assert http(f"{base}/rooms/{room}", mine)[0] == 200
        assert http(f"{base}/rooms/{room}?token={mine}")[0] == 200  # the host's link
        status, body = http(f"{base}/api/rooms/{room}/insights", mine)
        assert status == 200 and body["room_id"] == room
        assert http(f"{base}/api/rooms/{room}", mine)[0] == 200
        assert http(f"{base}/api/rooms/{room}/insights", theirs) == \
            (403, {"error": "unauthorized", "detail": "this token does not open this path"})
        assert http(f"{base}/rooms/{room}", theirs)[0] == 403
        assert http(f"{base}/api/rooms", mine)[0] == 403  # a host sees only its room
        assert http(f"{base}/api/stats", mine)[0] == 403
        assert http(f"{base}/api/stats", API_TOKEN)[0] == 200
        # the SSE stream opens with the token in the query (EventSource sends no headers)
        with urllib.request.urlopen(f"{base}/api/rooms/{room}/stream?token={mine}",
                                    timeout=5) as stream:
            assert stream.status == 200 and stream.readline().startswith(b"event: insight")
        chromium = find_chromium()
        if chromium is not None:
            asyncio.run(check_pages_in_browser(chromium, tmp_path, base, room, mine))
    finally:
        stop(worker)
    log = worker.log()
    for secret in SECRETS:
        assert secret not in log, "a secret reached the worker log"
    assert "Traceback" not in log
    require(chromium is not None, "Chromium (apt-get install chromium) for the page checks")


async def check_pages_in_browser(binary: str, tmp_path: Path, base: str, room: str,
                                 token: str) -> None:
    """The host page works with only its host token: read from the URL, kept in
    sessionStorage, sent with fetch (header) and EventSource (query); the index page works
    with the API token and its room links carry it."""
    async with Chromium(binary, failure_screenshot=tmp_path / "failure.png",
                        log_path=tmp_path / "chromium.log") as page:
        await page.navigate(f"{base}/rooms/{room}?token={token}")
        await page.wait_for("window.livepulseUpdates >= 1", timeout=30)
        assert await page.evaluate("window.livepulseLast.room_id") == room
        assert await page.evaluate("sessionStorage.getItem('livepulse-token')") == token
        assert await page.evaluate("document.getElementById('conn').dataset.state") == "live"
        await page.navigate(f"{base}/?token={API_TOKEN}")
        await page.wait_for("window.livepulsePolls >= 1 && "
                            "document.querySelectorAll('a.room-card').length > 0", timeout=30)
        href = await page.evaluate("document.querySelector('a.room-card').href")
        assert href.endswith(f"?token={API_TOKEN}")


def test_wrong_passwords_are_reported_not_fatal(tmp_path: Path, broker: Any,
                                                password_redis: RedisServer,
                                                secured_clickhouse: ClickHouseServer) -> None:
    tag = f"w{os.getpid()}x{time.monotonic_ns() % 10**9}"
    settings = unique_settings(
        tmp_path, broker, redis_url=password_redis.url.replace(REDIS_PASSWORD, "wrong-redis"),
        clickhouse_url=clickhouse_url(secured_clickhouse, "wrong-clickhouse", tag),
        pseudonym_key="pseudonym-key-for-tests-01234567")
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        wait_ready(worker)
        sim = Simulator(seed=6, rooms=2, users=100, items=100, bad_rate=0.0)
        stats = asyncio.run(run_simulation(broker.bootstrap, topic_names(settings), sim,
                                           rate=200.0, duration=2.0))
        assert stats.failed == 0

        def refused() -> str | None:
            page = http(f"{worker.web_url}/metrics")[1].decode()
            return page if (metric(page, "livepulse_redis_errors_total") > 0
                            and metric(page, "livepulse_clickhouse_errors_total") > 0) else None

        page = wait_for(refused, 60, "Redis and ClickHouse errors in the metrics")
        assert metric(page, "livepulse_redis_up") == 0
        assert metric(page, "livepulse_clickhouse_up") == 0
        # processing goes on: events were consumed
        wait_for(lambda: sum(http(f"{worker.web_url}/api/stats")[1]["events_in"].values()) > 0,
                 60, "events processed while the sinks refuse the credentials")
        assert worker.process.poll() is None
    finally:
        stop(worker)
    log = worker.log()
    assert "authentication failed: check the user and password in LIVEPULSE_REDIS_URL" in log
    assert ("authentication failed: check the user and password in LIVEPULSE_CLICKHOUSE_URL"
            in log)
    for secret in ("wrong-redis", "wrong-clickhouse"):
        assert secret not in log
