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
                                 {"LIVEPULSE_STORE": "redis://"}])
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
