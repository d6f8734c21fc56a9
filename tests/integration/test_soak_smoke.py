"""Keeps ``benchmarks/soak.py`` runnable: a 20-second soak on each broker, the shape of its
summary and its accounting (nothing lost, every output in its topic); no timing or growth
assertions: those are the benchmark's figures."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import soak
from tests.conftest import broker_engine

pytestmark = pytest.mark.integration
BROKERS = ("tansu", "kafka")


def test_soak_smoke(broker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = soak.main(["--minutes", "0.33", "--warmup-minutes", "0.1", "--interval", "2",
                        "--rate", "200", "--bootstrap", broker.bootstrap, "--redis", "",
                        "--broker", broker_engine(broker), "--out", ""])
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("{")
    assert {"rss_growth_pct_last", "rss_growth_pct_max", "rss_first_mb", "rss_max_mb",
            "lag_max", "lag_last", "lag_bounded", "errors", "passed", "processed",
            "samples", "command"} <= set(result)
    assert result["sent"] > 0 and result["processed"] > 0 and result["producer_failed"] == 0
    assert len(result["samples"]) >= 5 and result["post_warmup_samples"] >= 2
    assert all(s["rss_mb"] > 0 for s in result["samples"])
    assert "--bootstrap" not in result["command"]
    assert result["inputs_sent"] > 0 and result["lost"] == 0, result["lost"]
    outputs = result["outputs"]
    assert outputs["accounted"], outputs
    assert sum(t["counted"] for t in outputs["topics"].values()) > 0


def test_results_section_rendered() -> None:
    samples = [{"t_s": t, "rss_mb": 100.0 + t / 10, "lag_inputs": 5, "processed": 10 * t,
                "profiles": t, "errors": 0} for t in range(0, 100, 10)]
    opts = soak.Options(minutes=1, rate=50, warmup_minutes=0.5, interval_s=10)
    result = {"minutes": 1, "rate": 50, "warmup_minutes": 0.5, "interval_s": 10, "users": 9,
              "redis": False, "offered_events_per_s": 50.0, "sent": 3000, "processed": 900,
              "processed_after_drain": 900, "peak_rss_mb": 110.0, "profiles_first": 0,
              "profiles_last": 90, "load_avg_start": [1, 1, 1], "load_avg_end": [1, 1, 1],
              "inputs_sent": 900, "dead_letters": {}, "lost": 0, "broker_engine": "kafka",
              "retention_minutes": 10, "outputs": {"accounted": True, "topics": {
                  "recs": {"counted": 5, "in_log": 5}}},
              **soak.summarize(samples, opts)}
    text = soak.render_markdown(result, "python -m benchmarks.soak --minutes 1")
    assert text.startswith(soak.SECTIONS["kafka"])
    assert "python -m benchmarks.soak --minutes 1" in text and "all accounted" in text
    assert result["rss_first_mb"] == 103.0 and result["passed"]
