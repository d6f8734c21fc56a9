"""First-run errors and CLI help: one clear line naming the setting, never a traceback."""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys

import pytest

from agents.cli import HelpFormatter, build_parser
from config.settings import Settings, SettingsError, env_names, unknown_env
from streams.broker import free_port
from tests.conftest import REPO


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIVEPULSE_")}
    return subprocess.run([sys.executable, "-m", "agents.cli", *args], cwd=REPO,
                          env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The single `livepulse: ...` line of a failed command (no traceback around it)."""
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("livepulse: "), lines
    return lines[0]


# --- 1. log levels: every listed level and alias works, anything else is one line

LEVELS = ("debug", "info", "warn", "error", "crit", "WARNING", "Critical", "fatal")


@pytest.mark.parametrize("level", LEVELS)
def test_every_listed_log_level_is_accepted(level: str) -> None:
    settings = Settings.from_env({"LIVEPULSE_LOG_LEVEL": level})
    assert settings.log_level in ("debug", "info", "warn", "error", "crit")
    assert settings.log_level_number in (10, 20, 30, 40, 50)


def test_crit_runs_a_command_and_faust_logging() -> None:
    """`crit` crashed every command (logging) and Faust's own log set-up."""
    assert run_cli("schemas", "--check", env={"LIVEPULSE_LOG_LEVEL": "crit"}).returncode == 0
    code = ("from agents.cli import faust_log_level\n"
            "from mode.utils.logging import setup_logging\n"
            "for level in ('debug', 'info', 'warn', 'error', 'crit'):\n"
            "    print(setup_logging(loglevel=faust_log_level(level)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["10", "20", "30", "40", "50"]


def test_an_unknown_log_level_names_the_valid_ones() -> None:
    line = one_error_line(run_cli("schemas", "--check", env={"LIVEPULSE_LOG_LEVEL": "loud"}))
    assert "LIVEPULSE_LOG_LEVEL='loud'" in line
    assert "debug, info, warn, error, crit" in line


# --- 2. web port: refused at settings load; a port in use named with its setting

@pytest.mark.parametrize(("raw", "why"), [("70000", "not a TCP port (1-65535)"),
                                          ("0", "not a TCP port"), ("abc", "not an integer")])
def test_a_bad_web_port_is_refused_at_settings_load(raw: str, why: str) -> None:
    with pytest.raises(SettingsError, match=r"LIVEPULSE_WEB_PORT.*" + re.escape(why)):
        Settings.from_env({"LIVEPULSE_WEB_PORT": raw})
    line = one_error_line(run_cli("worker", env={"LIVEPULSE_WEB_PORT": raw}))
    assert line.startswith("livepulse: LIVEPULSE_WEB_PORT=") and why in line


@pytest.mark.parametrize("command", ["worker", "demo"])
def test_a_web_port_in_use_is_named_with_its_setting(command: str, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli(command, env={"LIVEPULSE_WEB_PORT": str(port),
                                    "LIVEPULSE_DATA_DIR": str(tmp_path / "data")})
    line = one_error_line(out)
    assert f"LIVEPULSE_WEB_PORT={port}: port {port} on 127.0.0.1 is already in use" in line


# --- 3. Kafka: an unreachable cluster is one line with a hint; http:// is refused

def test_unreachable_kafka_is_one_line_with_a_hint() -> None:
    url = f"127.0.0.1:{free_port()}"
    line = one_error_line(run_cli("topics", "list", env={"LIVEPULSE_KAFKA_URL": url}))
    assert f"cannot reach Kafka at {url} (LIVEPULSE_KAFKA_URL): connection refused" in line
    assert "unset it" in line and "embedded broker" in line


def test_an_unresolvable_kafka_host_is_one_line() -> None:
    line = one_error_line(run_cli("worker", env={
        "LIVEPULSE_KAFKA_URL": "kafka://no-such-host.invalid:9092",
        "LIVEPULSE_REDIS_URL": "",  # no Redis warning line (a machine without Redis)
        "LIVEPULSE_WEB_PORT": str(free_port())}))
    assert "cannot reach Kafka at no-such-host.invalid:9092" in line
    assert "cannot resolve 'no-such-host.invalid'" in line


def test_unreachable_redis_and_clickhouse_are_one_warning_line_each(tmp_path) -> None:
    """The sinks start without their store and catch up later: a WARNING line each (URL
    with its password masked, the setting, the reason, the way out), then the worker goes
    on (here to the Kafka check, which fails with its own single line)."""
    redis = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    clickhouse = f"clickhouse://default:pw@127.0.0.1:{free_port()}/lp"
    out = run_cli("worker", env={
        "LIVEPULSE_REDIS_URL": redis, "LIVEPULSE_CLICKHOUSE_URL": clickhouse,
        "LIVEPULSE_KAFKA_URL": f"127.0.0.1:{free_port()}", "LIVEPULSE_WEB_PORT": str(free_port()),
        "LIVEPULSE_DATA_DIR": str(tmp_path / "data")})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 3 and "hunter2" not in out.stderr and ":pw@" not in out.stderr, lines
    assert lines[0].startswith(f"livepulse: WARNING: cannot reach Redis at "
                               f"{redis.replace('hunter2', '***')} (LIVEPULSE_REDIS_URL): "
                               "connection refused; starting anyway")
    assert "set it empty (LIVEPULSE_REDIS_URL=) to serve from the workers' API only" in lines[0]
    assert lines[1].startswith("livepulse: WARNING: cannot reach ClickHouse at "
                               "clickhouse://default:***@127.0.0.1:")
    assert "(LIVEPULSE_CLICKHOUSE_URL): connection refused" in lines[1]
    assert "(LIVEPULSE_CLICKHOUSE_URL=) to run without history" in lines[1]
    assert "cannot reach Kafka" in lines[2]


def test_tail_without_a_cluster_is_one_line() -> None:
    line = one_error_line(run_cli("tail", "promo-triggers"))
    assert "set LIVEPULSE_KAFKA_URL" in line
    url = f"127.0.0.1:{free_port()}"
    line = one_error_line(run_cli("tail", "promo-triggers", env={"LIVEPULSE_KAFKA_URL": url}))
    assert f"cannot reach Kafka at {url}" in line


def test_a_reachable_store_gives_no_warning() -> None:
    from agents.preflight import store_warnings

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert store_warnings(f"redis://127.0.0.1:{port}/0",
                              f"clickhouse://127.0.0.1:{port}/lp") == []
    assert store_warnings("", "  ") == [] and store_warnings("unix:///tmp/r.sock", "") == []


@pytest.mark.parametrize("url", ["http://kafka:9092", "https://a:9092,b:9092",
                                 "kafka:port", "kafka://a:0"])
def test_a_kafka_url_that_is_not_kafka_is_refused_at_settings_load(url: str) -> None:
    with pytest.raises(SettingsError, match="LIVEPULSE_KAFKA_URL="):
        Settings.from_env({"LIVEPULSE_KAFKA_URL": url})


@pytest.mark.parametrize("url", ["kafka:9092", "kafka://a:9092,b:9093", "KAFKA://a:1",
                                 "broker", "[::1]:9092"])
def test_kafka_urls_of_today_are_still_accepted(url: str) -> None:
    assert Settings.from_env({"LIVEPULSE_KAFKA_URL": url}).kafka_url == url


# --- 4. unknown LIVEPULSE_* variables: warned with the closest setting

def test_a_misspelt_setting_is_warned_with_the_closest_name() -> None:
    assert unknown_env({"LIVEPULSE_PARITIONS": "8", "LIVEPULSE_WEB_PROT": "1",
                        "LIVEPULSE_TEST_REDIS_URL": "x", "LIVEPULSE_SHARED_DIR": "/"}) == [
        "LIVEPULSE_PARITIONS is not a livepulse setting (ignored); did you mean "
        "LIVEPULSE_PARTITIONS?",
        "LIVEPULSE_WEB_PROT is not a livepulse setting (ignored); did you mean "
        "LIVEPULSE_WEB_PORT?"]
    out = run_cli("schemas", "--check", env={"LIVEPULSE_PARITIONS": "8"})
    assert out.returncode == 0
    assert "livepulse: warning: LIVEPULSE_PARITIONS is not a livepulse setting (ignored); " \
        "did you mean LIVEPULSE_PARTITIONS?" in out.stderr


def test_every_livepulse_variable_the_repository_reads_is_known() -> None:
    """A new variable outside Settings must be added to OTHER_ENV_NAMES (else: warned)."""
    used: set[str] = set()
    for folder in ("agents", "streams", "config", "online_models", "dashboards", "tests",
                   "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            used |= set(re.findall(r"\b(LIVEPULSE_[A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    used -= {"LIVEPULSE_PARITIONS", "LIVEPULSE_WEB_PROT"}  # the typos above
    assert [w for w in unknown_env(dict.fromkeys(used, "")) if "LIVEPULSE_TEST_" not in w] \
        == [], sorted(used - env_names())


# --- 5. --version, and every option with help and its default

def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("livepulse ")
    assert out.stdout.split()[1][0].isdigit()


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_option_has_help_and_shows_its_default(name: str) -> None:
    command = subcommands()[name]
    formatter = HelpFormatter(prog=name)
    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)
    for action in command._actions:
        assert action.help, f"{name} {action.dest}: no help"
        if isinstance(action, flags) or action.required:
            continue
        assert "default" in formatter._get_help_string(action), f"{name} {action.dest}"
    rendered = command.format_help()
    assert "%(default)" not in rendered
