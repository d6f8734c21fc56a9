"""The alert and recording rules and the Prometheus configs, checked by promtool (Debian's
``prometheus`` package; in CI a missing binary is a failure)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO, require

PROMETHEUS_DIR = REPO / "config" / "prometheus"
RULES = PROMETHEUS_DIR / "livepulse-rules.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    require(binary is not None, "promtool binary (Debian package prometheus)")
    return subprocess.run([binary, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True,
                          timeout=120)


def test_rules_are_valid() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rule_unit_tests_pass_and_cover_every_alert() -> None:
    tests = sorted(PROMETHEUS_DIR.glob("*_test.yml"))
    assert tests
    done = promtool("test", "rules", *(t.name for t in tests))
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    firing = {case["alertname"] for t in tests
              for test in yaml.safe_load(t.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts == firing  # every alert has a test in which it fires


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-demo.yml"])
def test_configs_are_valid_and_load_the_rules(config: str) -> None:
    done = promtool("check", "config", config)
    assert done.returncode == 0, done.stdout + done.stderr
    loaded = yaml.safe_load((PROMETHEUS_DIR / config).read_text())
    assert loaded["rule_files"] == [RULES.name]
    (job,) = loaded["scrape_configs"]
    assert job["job_name"] == "livepulse" and job["metrics_path"] == "/metrics"
