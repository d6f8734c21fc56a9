"""A private, throw-away ``clickhouse-server`` on loopback ports (tests, demo, benchmarks).

Runs the server binary of Debian's ``clickhouse-server`` package (18.16; any later server
binary works too) with a minimal configuration in a temporary directory: native and HTTP
ports on 127.0.0.1, user ``default`` without password, UTC, no query log. It dies with the
process that started it (``PR_SET_PDEATHSIG``) and can be killed and restarted on the same
ports with its data kept (outage drills). ``livepulse demo`` starts one when
``LIVEPULSE_CLICKHOUSE_URL`` points at this machine and nothing answers there. Extra users
with passwords (``users={"lp": "secret"}``) test authenticated connections, and a
certificate and key (``tls_cert_file``, ``tls_key_file``) open a TLS native port
(``secure_port``, ``secure_url``).

>>> server = ClickHouseServer()
>>> server.url.startswith("clickhouse://default:@127.0.0.1:")
True
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape

from agents.server_process import ServerProcess
from streams.broker import _die_with_parent, free_port

CLICKHOUSE_SERVER_BIN = os.environ.get("LIVEPULSE_CLICKHOUSE_SERVER_BIN") or shutil.which(
    "clickhouse-server") or "/usr/sbin/clickhouse-server"

CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{dir}/clickhouse-server.log</log>
    <errorlog>{dir}/clickhouse-server.err.log</errorlog>
    <size>10M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{tcp_port}</tcp_port>
  <http_port>{http_port}</http_port>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>{tls}
</yandex>
"""

# The secure native port (TLS), when the server is given a certificate and key.
TLS_CONFIG = """
  <tcp_port_secure>{port}</tcp_port_secure>
  <openSSL><server>
    <certificateFile>{cert}</certificateFile><privateKeyFile>{key}</privateKeyFile>
    <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>
    <disableProtocols>sslv2,sslv3</disableProtocols><preferServerCiphers>true</preferServerCiphers>
  </server></openSSL>"""

USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>{extra_users}
  </users>
  <quotas><default></default></quotas>
</yandex>
"""


def clickhouse_server_available() -> bool:
    """True if the ``clickhouse-server`` binary can be run."""
    return os.access(CLICKHOUSE_SERVER_BIN, os.X_OK)


def ping(http_port: int, timeout: float = 0.5) -> bool:
    """True if a ClickHouse server answers ``/ping`` on 127.0.0.1:``http_port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ping",
                                    timeout=timeout) as resp:
            return resp.read().strip() == b"Ok."
    except (OSError, urllib.error.URLError):
        return False


class ClickHouseServer(ServerProcess):
    """One ``clickhouse-server`` process; ports and data directory stay across restarts."""

    stop_timeout_s = 15.0  # it waits for open connections, ~10 s with one

    def __init__(self, tcp_port: int | None = None, http_port: int | None = None,
                 base_dir: Path | None = None, users: Mapping[str, str] | None = None,
                 tls_cert_file: str | None = None, tls_key_file: str | None = None) -> None:
        self.users = dict(users or {})  # extra users: name -> password (plain text)
        self.tls_cert_file = tls_cert_file
        self.tls_key_file = tls_key_file
        self.secure_port = free_port() if tls_cert_file else None
        self.tcp_port = tcp_port or free_port()
        self.http_port = http_port or free_port()
        self._own_dir = base_dir is None
        self.base_dir = base_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Native-protocol URL of the ``livepulse`` database on this server."""
        return f"clickhouse://default:@127.0.0.1:{self.tcp_port}/livepulse"

    @property
    def secure_url(self) -> str:
        """Native-protocol URL over TLS (verify with the certificate as CA: ``ca_certs``)."""
        if self.secure_port is None:
            raise ValueError("no TLS port: start the server with tls_cert_file")
        return (f"clickhouse://default:@127.0.0.1:{self.secure_port}/livepulse?secure=True"
                f"&ca_certs={self.tls_cert_file}")

    @property
    def dir(self) -> Path:
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="lp-clickhouse-"))
        return self.base_dir

    @property
    def log_path(self) -> Path:
        return self.dir / "clickhouse-server.err.log"

    def _write_config(self) -> Path:
        directory = self.dir
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "config.xml"
        tls = TLS_CONFIG.format(port=self.secure_port, cert=self.tls_cert_file,
                                key=self.tls_key_file or self.tls_cert_file) \
            if self.secure_port else ""
        config.write_text(CONFIG.format(dir=directory, tcp_port=self.tcp_port,
                                        http_port=self.http_port, tls=tls))
        extra = "".join(
            f"\n    <{name}><password>{escape(password)}</password><networks><ip>127.0.0.1</ip>"
            f"<ip>::1</ip></networks><profile>default</profile><quota>default</quota></{name}>"
            for name, password in self.users.items())
        (directory / "users.xml").write_text(USERS.replace("{extra_users}", extra))
        return config

    def start(self, timeout: float = 60.0) -> str:
        """Start the server (no-op if running) and wait until it answers; return the URL."""
        if self.process is not None and self.process.poll() is None:
            return self.url
        config = self._write_config()
        with open(self.dir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                [CLICKHOUSE_SERVER_BIN, f"--config-file={config}"], cwd=self.dir,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited ({self.process.returncode}): "
                                   f"{self._tail()}")
            if ping(self.http_port):
                return self.url
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"clickhouse-server not answering on port {self.http_port} in "
                           f"{timeout} s: {self._tail()}")

    def _tail(self) -> str:
        texts = [p.read_text(errors="replace")[-2000:] for p in
                 (self.dir / "stdout.log", self.log_path) if p.exists()]
        return "\n".join(texts)

    def cleanup(self) -> None:
        """Kill the server and delete its directory (if this object created it); a server
        whose data is thrown away need not shut down cleanly."""
        self.kill()
        if self._own_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> ClickHouseServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cleanup()
