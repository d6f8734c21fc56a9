"""Connection security and access settings: option mapping, validation, masking, tokens."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from agents.web.auth import access_middleware, host_token
from config.settings import Settings, SettingsError, redact_url
from streams.app import create_app
from streams.security import faust_credentials, kafka_client_options

CLUSTER = {"LIVEPULSE_KAFKA_URL": "kafka-1:9093"}
STRONG = "-7Kp2vQ9mZ4rT8wY1nB6cF3hJ5gD0sLa"  # makes a test secret long and varied enough
SASL = {**CLUSTER, "LIVEPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LIVEPULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "LIVEPULSE_KAFKA_SASL_USERNAME": "livepulse",
        "LIVEPULSE_KAFKA_SASL_PASSWORD": "kafka-secret"}


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA bundle file (the system's, copied: any valid PEM works for the mapping)."""
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    paths = ssl.get_default_verify_paths()
    source = Path(paths.cafile or paths.openssl_cafile)
    path.write_bytes(source.read_bytes())
    return str(path)


def test_plaintext_is_the_default_everywhere() -> None:
    settings = Settings.from_env(CLUSTER)
    assert kafka_client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None
    app = create_app(settings)
    assert credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context) == \
        {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_maps_to_aiokafka_and_faust_alike(ca_file: str) -> None:
    settings = Settings.from_env({**SASL, "LIVEPULSE_KAFKA_SSL_CAFILE": ca_file})
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "livepulse"
    assert options["sasl_plain_password"] == "kafka-secret"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    app = create_app(settings)  # the Faust app gets the same credentials
    faust_auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert {k: v for k, v in faust_auth.items() if k != "ssl_context"} == \
        {k: v for k, v in options.items() if k != "ssl_context"}
    assert isinstance(faust_auth["ssl_context"], ssl.SSLContext)
    assert "kafka-secret" not in repr(credentials)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_sasl_plaintext_has_no_tls(mechanism: str) -> None:
    settings = Settings.from_env({**SASL, "LIVEPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                  "LIVEPULSE_KAFKA_SASL_MECHANISM": mechanism})
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in options
    assert options["sasl_mechanism"] == mechanism
    assert faust_credentials(settings).protocol.value == "SASL_PLAINTEXT"


def test_ssl_only_maps_to_ssl_credentials(ca_file: str) -> None:
    settings = Settings.from_env({**CLUSTER, "LIVEPULSE_KAFKA_SECURITY_PROTOCOL": "SSL",
                                  "LIVEPULSE_KAFKA_SSL_CAFILE": ca_file})
    options = kafka_client_options(settings)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert isinstance(faust_credentials(settings), faust.SSLCredentials)


@pytest.mark.parametrize("env, message", [
    ({**CLUSTER, "LIVEPULSE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of"),
    ({**SASL, "LIVEPULSE_KAFKA_SASL_MECHANISM": "GSSAPI"}, "SASL_MECHANISM"),
    ({**SASL, "LIVEPULSE_KAFKA_SASL_PASSWORD": ""}, "_SASL_PASSWORD"),
    ({**SASL, "LIVEPULSE_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "no such file"),
    ({**SASL, "LIVEPULSE_KAFKA_SSL_CERTFILE": "/etc/hostname"}, "go together"),
    ({"LIVEPULSE_KAFKA_SECURITY_PROTOCOL": "SSL"}, "embedded broker is plaintext"),
    ({"LIVEPULSE_PROCESSING_GUARANTEE": "exactly_once"}, "does not support"),
    ({**CLUSTER, "LIVEPULSE_PROCESSING_GUARANTEE": "exactly-once"}, "at_least_once"),
    ({"LIVEPULSE_WEB_HOST": "0.0.0.0"}, "LIVEPULSE_API_TOKEN"),
    ({"LIVEPULSE_WEB_HOST": "10.1.2.3"}, "LIVEPULSE_API_TOKEN"),
    ({"LIVEPULSE_REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"}, "no such file"),
])
def test_bad_security_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_accepted_security_settings() -> None:
    on_kafka = Settings.from_env({**CLUSTER, "LIVEPULSE_PROCESSING_GUARANTEE": "exactly_once"})
    assert create_app(on_kafka).conf.processing_guarantee.value == "exactly_once"
    public = Settings.from_env({"LIVEPULSE_WEB_HOST": "0.0.0.0", "LIVEPULSE_API_TOKEN": STRONG})
    assert public.api_token == STRONG
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert Settings.from_env({"LIVEPULSE_WEB_HOST": host}).web_host == host


def test_secrets_never_show_in_repr_or_dumps() -> None:
    secrets = ["kafka-secret", "api-secret" + STRONG, "host-key-secret" + STRONG,
               "redis-secret", "ch-secret", "pseudo-secret" + STRONG, "snap-secret" + STRONG]
    settings = Settings.from_env({
        **SASL, "LIVEPULSE_API_TOKEN": secrets[1], "LIVEPULSE_HOST_TOKEN_KEY": secrets[2],
        "LIVEPULSE_REDIS_URL": "rediss://lp:redis-secret@cache:6380/0",
        "LIVEPULSE_CLICKHOUSE_URL": "clickhouse://lp:ch-secret@ch:9440/hist?secure=True",
        "LIVEPULSE_PSEUDONYM_KEY": secrets[5], "LIVEPULSE_SNAPSHOT_KEY": secrets[6]})
    shown = repr(settings) + str(settings) + repr(settings.redacted())
    for secret in secrets:
        assert secret not in shown
    redacted = settings.redacted()
    assert redacted["redis_url"] == "rediss://lp:***@cache:6380/0"
    assert redacted["clickhouse_url"] == "clickhouse://lp:***@ch:9440/hist?secure=True"
    assert redacted["kafka_sasl_password"] == "***"
    assert redacted["kafka_sasl_username"] == "livepulse"
    assert Settings().redacted()["api_token"] == ""  # unset stays visibly unset
    assert redact_url("redis://:p@h:1/0") == "redis://:***@h:1/0"


def test_clickhouse_url_carries_credentials_and_tls() -> None:
    from agents.sinks.clickhouse import client_for

    client, database = client_for("clickhouse://lp:pw@ch:9440/hist?secure=True"
                                  "&ca_certs=/etc/ssl/ca.pem")
    connection = client.connection
    assert (database, connection.user, connection.password) == ("hist", "lp", "pw")
    assert connection.secure_socket and connection.ssl_options == {"ca_certs": "/etc/ssl/ca.pem"}


def test_host_token_cli(monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    from agents.cli import main

    monkeypatch.delenv("LIVEPULSE_API_TOKEN", raising=False)
    monkeypatch.delenv("LIVEPULSE_HOST_TOKEN_KEY", raising=False)
    assert main(["host-token", "room 1"]) == 2
    assert "LIVEPULSE_HOST_TOKEN_KEY" in capsys.readouterr().err
    key = "host-key" + STRONG
    monkeypatch.setenv("LIVEPULSE_HOST_TOKEN_KEY", key)
    assert main(["host-token", "room 1"]) == 0
    assert capsys.readouterr().out.strip() == host_token(key, "room 1")
    assert main(["host-token", "room 1", "--url", "https://live.example.com/"]) == 0
    assert capsys.readouterr().out.strip() == \
        f"https://live.example.com/rooms/room%201?token={host_token(key, 'room 1')}"


def test_host_tokens_are_per_room_and_per_key() -> None:
    token = host_token("key-1", "room-1")
    assert len(token) == 32 and token == host_token("key-1", "room-1")
    assert token != host_token("key-1", "room-2") and token != host_token("key-2", "room-1")


# ------------------------------------------------------------------ the access middleware
async def _statuses(settings: Settings, requests: list[tuple[str, dict[str, str]]]
                    ) -> list[tuple[int, Any]]:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[access_middleware(settings)])
    for path in ("/", "/healthz", "/metrics", "/static/{name}", "/rooms/{room}",
                 "/api/rooms", "/api/rooms/{room}", "/api/rooms/{room}/insights",
                 "/api/rooms/{room}/stream", "/api/users/{user}/profile"):
        app.router.add_get(path, ok)
    results = []
    async with TestClient(TestServer(app)) as client:
        for path, headers in requests:
            resp = await client.get(path, headers=headers)
            results.append((resp.status, await resp.json()))
    return results


def test_access_rules() -> None:
    settings = Settings(api_token="admin-token", host_token_key="host-key")
    room1 = host_token("host-key", "room 1")
    room2 = host_token("host-key", "room-2")
    bearer = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
    cases = [
        ("/healthz", {}, 200), ("/static/livepulse.js", {}, 200),
        ("/metrics", {}, 401), ("/metrics", bearer("admin-token"), 200),
        ("/api/rooms", {}, 401), ("/api/rooms", bearer("wrong"), 403),
        ("/api/rooms", bearer("admin-token"), 200), ("/", bearer("admin-token"), 200),
        ("/api/rooms", bearer(room1), 403),  # a host token lists nothing
        ("/rooms/room%201", bearer(room1), 200), ("/rooms/room%201?token=" + room1, {}, 200),
        ("/api/rooms/room%201", bearer(room1), 200),
        ("/api/rooms/room%201/insights", bearer(room1), 200),
        ("/api/rooms/room%201/stream?token=" + room1, {}, 200),
        ("/api/rooms/room-2/insights", bearer(room1), 403),
        ("/rooms/room-2", bearer(room2), 200), ("/rooms/room-2", bearer(room1), 403),
        ("/api/users/u1/profile", bearer(room1), 403),
        ("/api/users/u1/profile", bearer("admin-token"), 200),
        ("/rooms/room-2?token=admin-token", {}, 200),
    ]
    results = asyncio.run(_statuses(settings, [(path, headers) for path, headers, _ in cases]))
    for (path, headers, expected), (status, body) in zip(cases, results, strict=True):
        assert status == expected, (path, headers, status, body)
        if status in (401, 403):
            assert body["error"] == "unauthorized"


def test_metrics_public_and_api_token_as_host_key() -> None:
    settings = Settings(api_token="admin-token", metrics_public=True)
    room = host_token("admin-token", "r1")  # no host key: the API token keys host tokens
    results = asyncio.run(_statuses(settings, [
        ("/metrics", {}), ("/api/rooms/r1", {"Authorization": f"Bearer {room}"})]))
    assert [status for status, _ in results] == [200, 200]


# ------------------------------------------------------------- weak secrets are refused

PUBLIC = {"LIVEPULSE_WEB_HOST": "0.0.0.0"}


@pytest.mark.parametrize("env, message", [
    ({**PUBLIC, "LIVEPULSE_API_TOKEN": "x"}, "API_TOKEN is shorter than 32 characters"),
    ({**PUBLIC, "LIVEPULSE_API_TOKEN": " "}, "API_TOKEN is whitespace only"),
    ({**PUBLIC, "LIVEPULSE_API_TOKEN": " " * 40}, "API_TOKEN is whitespace only"),
    ({**PUBLIC, "LIVEPULSE_API_TOKEN": "change-me"}, "API_TOKEN is a known default"),
    ({**PUBLIC, "LIVEPULSE_API_TOKEN": "ChangeMe"}, "API_TOKEN is a known default"),
    ({"LIVEPULSE_WEB_HOST": "10.1.2.3", "LIVEPULSE_API_TOKEN": "password"}, "known default"),
    ({"LIVEPULSE_WEB_HOST": "", "LIVEPULSE_API_TOKEN": "token"}, "known default"),
    ({**PUBLIC, "LIVEPULSE_API_TOKEN": "ab" * 20}, "fewer than 8 distinct characters"),
    ({**PUBLIC, "LIVEPULSE_API_TOKEN": "short-but-random-Zq81"}, "shorter than 32"),
    ({"LIVEPULSE_HOST_TOKEN_KEY": "host-key"}, "HOST_TOKEN_KEY is shorter than 32"),
    ({**PUBLIC, "LIVEPULSE_API_TOKEN": STRONG, "LIVEPULSE_HOST_TOKEN_KEY": "Default"},
     "HOST_TOKEN_KEY is a known default with a web server reachable"),
    ({"LIVEPULSE_PSEUDONYM_KEY": "change-me"}, "PSEUDONYM_KEY is a known default"),
    ({"LIVEPULSE_PSEUDONYM_KEY": "pseudonym-key-16"}, "PSEUDONYM_KEY is shorter than 32"),
    ({"LIVEPULSE_PSEUDONYM_KEY": "   "}, "PSEUDONYM_KEY is whitespace only"),
    ({"LIVEPULSE_SNAPSHOT_KEY": "k"}, "SNAPSHOT_KEY is shorter than 32"),
    ({"LIVEPULSE_SNAPSHOT_KEY": "k" * 64}, "SNAPSHOT_KEY is made of fewer than 8"),
])
def test_weak_or_default_secrets_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as refused:
        Settings.from_env(env)
    assert "livepulse secrets init" in str(refused.value)  # says what to do
    for value in env.values():  # and never echoes the secret
        if len(value.strip()) > 3 and value not in ("0.0.0.0", "10.1.2.3"):
            assert value not in str(refused.value)


def test_secrets_that_are_accepted() -> None:
    # loopback: any API token (the demo, tests); unset keys fall back to their defaults
    assert Settings.from_env({"LIVEPULSE_API_TOKEN": "t"}).api_token == "t"
    strong = {**PUBLIC, "LIVEPULSE_API_TOKEN": "api" + STRONG,
              "LIVEPULSE_HOST_TOKEN_KEY": "host" + STRONG,
              "LIVEPULSE_PSEUDONYM_KEY": "pseudonym" + STRONG,
              "LIVEPULSE_SNAPSHOT_KEY": "snapshot" + STRONG}
    assert Settings.from_env(strong).pseudonym_key == "pseudonym" + STRONG


# ------------------------------------------------------------------- livepulse secrets init


def test_secrets_init_writes_a_private_file_of_strong_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from agents.cli import SECRET_VARIABLES, main

    # runs even when the current settings are refused (it is how they get fixed)
    monkeypatch.setenv("LIVEPULSE_WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("LIVEPULSE_API_TOKEN", "change-me")
    target = tmp_path / "livepulse.env"
    assert main(["secrets", "init", "--file", str(target)]) == 0
    assert (target.stat().st_mode & 0o777) == 0o600
    values = dict(line.split("=", 1) for line in target.read_text().splitlines()
                  if line and not line.startswith("#"))
    assert set(values) == set(SECRET_VARIABLES) == {
        "LIVEPULSE_API_TOKEN", "LIVEPULSE_HOST_TOKEN_KEY", "LIVEPULSE_PSEUDONYM_KEY",
        "LIVEPULSE_SNAPSHOT_KEY"}
    assert len(set(values.values())) == 4 and all(len(v) >= 64 for v in values.values())
    out = capsys.readouterr().out
    assert str(target) in out and "LIVEPULSE_PSEUDONYM_KEY" in out
    assert not any(value in out for value in values.values())  # names only, never values
    assert Settings.from_env({**PUBLIC, **values,
                              "LIVEPULSE_CLICKHOUSE_URL": "clickhouse://ch:9000/lp"})

    before = target.read_bytes()
    assert main(["secrets", "init", "--file", str(target)]) == 1  # never overwritten...
    assert target.read_bytes() == before and "--force" in capsys.readouterr().err
    assert main(["secrets", "init", "--file", str(target), "--force"]) == 0  # ...unless asked
    assert target.read_bytes() != before and (target.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["livepulse.env"]  # no temporaries
