"""A private, throw-away ``redis-server`` on a loopback port (demo and tests).

No persistence (``--save "" --appendonly no``; ``persist=True`` keeps an append-only file so
the data survives a kill and restart), dies with the process that started it, and can be
killed, paused and restarted on the same port to simulate outages. ``livepulse demo``
starts one when ``LIVEPULSE_REDIS_URL`` points at this machine and nothing answers there.
Optionally with a password (``--requirepass``) and TLS only (``--tls-port``, a PEM
certificate and key; clients are not asked for certificates).

>>> server = RedisServer()
>>> server.url.startswith("redis://127.0.0.1:")
True
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from agents.server_process import ServerProcess
from streams.broker import _die_with_parent, free_port

REDIS_SERVER_BIN = os.environ.get("LIVEPULSE_REDIS_SERVER_BIN") or shutil.which(
    "redis-server") or "/usr/bin/redis-server"


def redis_server_available() -> bool:
    """True if the ``redis-server`` binary can be run."""
    return os.access(REDIS_SERVER_BIN, os.X_OK)


def ping(port: int, timeout: float = 0.5, password: str | None = None,
         tls: bool = False) -> bool:
    """True if a Redis server answers PING on 127.0.0.1:``port`` (after AUTH, over TLS
    without verifying the certificate, when asked)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            sock = raw
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(raw)
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ServerProcess):
    """One ``redis-server`` process; ``port`` stays the same across restarts."""

    stop_timeout_s = 5.0

    def __init__(self, port: int | None = None, log_dir: Path | None = None, *,
                 password: str | None = None, tls_cert_file: str | None = None,
                 tls_key_file: str | None = None, persist: bool = False) -> None:
        self.port = port or free_port()
        self.log_dir = log_dir
        self.password = password
        self.tls_cert_file = tls_cert_file
        self.tls_key_file = tls_key_file
        self.persist = persist  # append-only file in log_dir: data survives kill + start
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def _security_args(self) -> list[str]:
        args = ["--requirepass", self.password] if self.password else []
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", str(self.tls_cert_file),
                     "--tls-key-file", str(self.tls_key_file or self.tls_cert_file),
                     "--tls-auth-clients", "no"]
        return args

    @property
    def log_path(self) -> Path:
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="lp-redis-"))
        return self.log_dir / f"redis-{self.port}.log"

    def start(self, timeout: float = 10.0) -> str:
        """Start the server (no-op if running) and wait until it answers; return the URL."""
        if self.process is not None and self.process.poll() is None:
            return self.url
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [REDIS_SERVER_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "yes" if self.persist else "no",
                 "--appendfsync", "always", "--dir", str(self.log_path.parent),
                 *self._security_args()],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
            if ping(self.port, password=self.password, tls=self.tls):
                return self.url
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server not answering on port {self.port} in {timeout} s")

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
