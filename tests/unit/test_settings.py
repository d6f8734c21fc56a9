"""Settings: one frozen object from LIVEPULSE_* variables, documented and used consistently."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from config.settings import Settings, SettingsError, env_names, settings_table

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_embedded_mode() -> None:
    s = Settings.from_env({})
    assert s.embedded_broker and s.store == "memory://" and s.web_port == 6066
    assert s.max_event_bytes == 64 * 1024
    assert s.fetch_max_wait_ms <= 50  # low latency by default


def test_env_parsing_and_frozen() -> None:
    s = Settings.from_env({"LIVEPULSE_KAFKA_URL": "kafka://a:9092, b:9093",
                           "LIVEPULSE_PARTITIONS": "12", "LIVEPULSE_SIM_RATE": "2.5"})
    assert s.bootstrap_servers == "a:9092,b:9093" and not s.embedded_broker
    assert s.partitions == 12 and s.sim_rate == 2.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.partitions = 1  # type: ignore[misc]
    assert Settings.from_env(s.to_env()) == s


@pytest.mark.parametrize("env", [{"LIVEPULSE_PARTITIONS": "many"},
                                 {"LIVEPULSE_PARTITIONS": "0"},
                                 {"LIVEPULSE_STORE": "redis://"},
                                 {"LIVEPULSE_ANOMALY_DETECTOR": "htm"}])
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_readme_documents_every_setting() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name, default, _ in settings_table():
        row = re.search(rf"^\| `{name}` \|\s*`?([^|`]*?)`?\s*\|", readme, re.MULTILINE)
        assert row, f"{name} missing from the README configuration table"
        assert row.group(1).strip() == default, f"{name}: README default differs"


def test_compose_uses_only_known_settings() -> None:
    compose = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"\b(LIVEPULSE_[A-Z0-9_]+)\b", compose))
    assert used, "compose file sets no LIVEPULSE_ variables"
    assert used <= env_names(), used - env_names()


KEY = "history-key-7Kp2vQ9mZ4rT8wY1nB6cF3hJ5gD0sLa"
TOKEN = "api-token-7Kp2vQ9mZ4rT8wY1nB6cF3hJ5gD0sLa"


@pytest.mark.parametrize("env", [
    # a history on another host: workers and `livepulse forget` must share one key
    {"LIVEPULSE_CLICKHOUSE_URL": "clickhouse://default:@clickhouse:9000/livepulse"},
    {"LIVEPULSE_CLICKHOUSE_URL": "clickhouse://lp:pw@10.0.0.5:9440/lp?secure=True"},
    # a web server reachable from elsewhere is not the single-host case either
    {"LIVEPULSE_CLICKHOUSE_URL": "clickhouse://default:@127.0.0.1:9000/livepulse",
     "LIVEPULSE_WEB_HOST": "0.0.0.0", "LIVEPULSE_API_TOKEN": TOKEN},
])
def test_history_without_a_pseudonym_key_is_refused_beyond_one_host(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="LIVEPULSE_PSEUDONYM_KEY is empty"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "LIVEPULSE_PSEUDONYM_KEY": KEY}).pseudonym_key == KEY


def test_single_host_history_keeps_the_key_file_default() -> None:
    for host in ("127.0.0.1", "localhost", "[::1]"):
        local = Settings.from_env({"LIVEPULSE_CLICKHOUSE_URL": f"clickhouse://{host}:9000/lp"})
        assert local.pseudonym_key == ""  # agents.privacy keeps <data dir>/.pseudonym-key


@pytest.mark.parametrize("env", [
    {"LIVEPULSE_DATA_DIR": "/srv/lp", "LIVEPULSE_SNAPSHOT_DIR": "/srv/lp"},  # keys/ inside
    {"LIVEPULSE_SNAPSHOT_DIR": "/srv/snaps", "LIVEPULSE_SNAPSHOT_KEY_FILE": "/srv/snaps/.key"},
    {"LIVEPULSE_SNAPSHOT_DIR": "/srv/snaps",
     "LIVEPULSE_SNAPSHOT_KEY_FILE": "/srv/snaps/sub/../keys/k"},
    {"LIVEPULSE_DATA_DIR": "/srv/lp", "LIVEPULSE_SNAPSHOT_KEY_FILE": "/srv/lp/snapshots/k"},
])
def test_a_snapshot_key_file_inside_the_snapshot_directory_is_refused(
        env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="inside the snapshot directory"):
        Settings.from_env(env)
    # a key given in the environment leaves no key file to find
    assert Settings.from_env({**env, "LIVEPULSE_SNAPSHOT_KEY": KEY}).snapshot_key == KEY


def test_a_snapshot_key_file_reached_through_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "snaps").mkdir()
    (tmp_path / "elsewhere").symlink_to(tmp_path / "snaps")
    with pytest.raises(SettingsError, match="inside the snapshot directory"):
        Settings.from_env({"LIVEPULSE_SNAPSHOT_DIR": str(tmp_path / "snaps"),
                           "LIVEPULSE_SNAPSHOT_KEY_FILE": str(tmp_path / "elsewhere" / "k")})


def test_default_snapshot_key_file_sits_beside_not_inside_the_snapshots() -> None:
    s = Settings.from_env({"LIVEPULSE_DATA_DIR": "/srv/lp"})
    assert (s.snapshot_path, s.snapshot_key_path) == ("/srv/lp/snapshots",
                                                      "/srv/lp/keys/snapshot.key")
    assert Settings.from_env({"LIVEPULSE_SNAPSHOT_DIR": "/mnt/shared/snaps"}).snapshot_key_path \
        == "livepulse-data/keys/snapshot.key"


def test_compose_requires_its_secrets_and_defaults_none() -> None:
    compose = (REPO / "docker-compose.yml").read_text(encoding="utf-8")
    for name in ("LIVEPULSE_API_TOKEN", "LIVEPULSE_PSEUDONYM_KEY", "LIVEPULSE_HOST_TOKEN_KEY",
                 "LIVEPULSE_SNAPSHOT_KEY"):
        assert re.search(rf'{name}: "\$\{{{name}:\?[^}}]*secrets init', compose), name
    assert "change-me" not in compose and ":-" not in compose
