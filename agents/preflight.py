"""Checks before a command starts its clients and servers, each failing with one line that
names the setting to change (instead of a traceback from deep inside Faust or aiokafka).

>>> StartupError("x").args
('x',)
"""

from __future__ import annotations

import errno
import socket

KAFKA_PROBE_TIMEOUT_S = 5.0


class StartupError(RuntimeError):
    """A command cannot start; its message is the one line the CLI prints."""


def port_problem(host: str, port: int, setting: str = "LIVEPULSE_WEB_PORT") -> str | None:
    """Why a web server cannot listen on ``host:port`` now (in use, not allowed), or None.

    Binds like aiohttp does (``SO_REUSEADDR``), so a port only in TIME_WAIT is free.

    >>> import socket
    >>> with socket.socket() as taken:
    ...     taken.bind(("127.0.0.1", 0)); taken.listen()
    ...     port = taken.getsockname()[1]
    ...     port_problem("127.0.0.1", port) == (
    ...         f"LIVEPULSE_WEB_PORT={port}: port {port} on 127.0.0.1 is already in use (another "
    ...         "livepulse worker or demo?): stop it or set LIVEPULSE_WEB_PORT to a free port")
    True
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"LIVEPULSE_WEB_HOST={host!r}: cannot resolve it ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            where = f"port {port} on {host or 'every interface'}"
            if exc.errno == errno.EADDRINUSE:
                return (f"{setting}={port}: {where} is already in use (another livepulse "
                        f"worker or demo?): stop it or set {setting} to a free port")
            if exc.errno == errno.EACCES:
                return f"{setting}={port}: not allowed to listen on {where} (ports below " \
                    f"1024 need privileges): set {setting} to a port above 1023"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"LIVEPULSE_WEB_HOST={host!r}: not an address of this machine"
            return f"{setting}={port}: cannot listen on {where}: {exc.strerror}"
    return None


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port[,host:port]`` (no scheme) -> [(host, port)]; port 9092 when missing.

    >>> _servers("a:9093, [::1]:9094,b")
    [('a', 9093), ('::1', 9094), ('b', 9092)]
    """
    out = []
    for part in (p.strip() for p in bootstrap.split(",")):
        host, colon, port = part.rpartition(":")
        if not colon or not port.isdigit():
            host, port = part, "9092"
        out.append((host.strip("[]"), int(port)))
    return out


def kafka_problem(bootstrap: str, timeout_s: float = KAFKA_PROBE_TIMEOUT_S) -> str | None:
    """Why no bootstrap server of ``LIVEPULSE_KAFKA_URL`` accepts a connection, or None
    when one does (a TCP connection only: security and protocol are the clients' to check).

    >>> from streams.broker import free_port
    >>> print(kafka_problem(f"127.0.0.1:{free_port()}", 1.0))  # doctest: +ELLIPSIS
    cannot reach Kafka at 127.0.0.1:... (LIVEPULSE_KAFKA_URL): connection refused. Start ...
    """
    reason = "no server"
    for host, port in _servers(bootstrap):
        reason = _unreachable(host, port, timeout_s)
        if reason is None:
            return None
    return (f"cannot reach Kafka at {bootstrap} (LIVEPULSE_KAFKA_URL): {reason}. Start the "
            "broker or correct LIVEPULSE_KAFKA_URL; or unset it: every command then starts "
            "the embedded broker (`livepulse broker` runs one in the foreground and prints its "
            "address)")


# The serving and history sinks are built to start without their store and catch up once it
# answers (agents/sinks/redis.py, agents/sinks/clickhouse.py): an unreachable one is a
# WARNING at start, not a refusal.
STORES = {
    "LIVEPULSE_REDIS_URL": ("Redis", 6379, "serving keys are kept pending (up to "
                            "LIVEPULSE_REDIS_MAX_PENDING) and written once it answers",
                            "to serve from the workers' API only"),
    "LIVEPULSE_CLICKHOUSE_URL": ("ClickHouse", 9000, "history waits in Kafka and is stored "
                                 "once it answers", "to run without history"),
}


def store_warning(setting: str, url: str, timeout_s: float = 2.0) -> str | None:
    """A one-line WARNING when the store ``url`` of ``setting`` (``LIVEPULSE_REDIS_URL``
    or ``LIVEPULSE_CLICKHOUSE_URL``) accepts no TCP connection, or None (also for an unset
    URL or one without a host, e.g. a Unix socket). Passwords are masked.

    >>> from streams.broker import free_port
    >>> url = f"redis://:pw@127.0.0.1:{free_port()}/0"
    >>> print(store_warning("LIVEPULSE_REDIS_URL", url, 1.0))  # doctest: +ELLIPSIS
    WARNING: cannot reach Redis at redis://:***@127.0.0.1:.../0 (LIVEPULSE_REDIS_URL): ...
    """
    from urllib.parse import urlsplit

    from config.settings import redact_url

    name, default_port, meanwhile, without = STORES[setting]
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port or default_port
    except ValueError as exc:
        return f"WARNING: {setting}: not a URL ({exc})"
    if not host:
        return None
    reason = _unreachable(host, port, timeout_s)
    if reason is None:
        return None
    return (f"WARNING: cannot reach {name} at {redact_url(url.strip())} ({setting}): {reason}; "
            f"starting anyway: {meanwhile}. Start it or correct {setting}, or set it empty "
            f"({setting}=) {without}")


def store_warnings(redis_url: str, clickhouse_url: str) -> list[str]:
    """:func:`store_warning` of both stores (the configured ones only)."""
    found = (store_warning(setting, url) for setting, url in (
        ("LIVEPULSE_REDIS_URL", redis_url), ("LIVEPULSE_CLICKHOUSE_URL", clickhouse_url))
        if url.strip())
    return [line for line in found if line]


def _unreachable(host: str, port: int, timeout_s: float) -> str | None:
    """Why a TCP connection to ``host:port`` fails within ``timeout_s`` (None: it opens)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except socket.gaierror as exc:
        return f"cannot resolve {host!r} ({exc.strerror})"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
