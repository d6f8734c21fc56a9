"""Keeps ``benchmarks/bench_pipeline.py`` runnable: its hidden ``--smoke`` plan (2,000-event
backlog, 200 events/s, a few seconds, no scaling, no baselines) on the session broker, the
JSON shape only (no timing assertions)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import bench_pipeline

pytestmark = pytest.mark.integration

LATENCY_KEYS = {"count", "p50_ms", "p95_ms", "p99_ms", "max_ms"}


def test_bench_pipeline_smoke(broker: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = bench_pipeline.main(["--smoke", "--bootstrap", broker.bootstrap, "--redis", ""])
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("{")
    assert {"max_events_per_s", "p50_ms", "p99_ms", "rss_mb", "baselines", "throughput",
            "latency", "memory", "profile", "agent_processing", "targets",
            "machine"} <= set(result)
    assert {"max_verified", "latency_5k_complete", "relay_p50_ms", "relay_p99_ms",
            "relay_5k_complete",
            "cpu_us_per_event", "engine_count/quix"} <= set(result)
    assert result["mode"] == "smoke" and result["redis"] is False
    # the smoke plan has no 5k/s run and no baselines: no headline latency or ratio
    assert result["p99_ms"] is None and result["relay_p99_ms"] is None
    assert result["engine_count/quix"] is None
    throughput = result["throughput"]
    assert throughput["processed"] > 0 and throughput["drained"]
    assert throughput["estimate_events_per_s"] > 0 and throughput["verify"]
    assert {"sustained", "lag", "offered_events_per_s"} <= set(throughput["verify"][0])
    assert result["max_events_per_s"] > 0
    assert result["cpu_us_per_event"] == throughput["drain"]["cpu_us_per_event"] > 0
    run = result["latency"]["200"]
    assert set(run["pipeline"]) >= LATENCY_KEYS and set(run["relay"]) >= LATENCY_KEYS
    assert run["pipeline"]["count"] > 0 and run["pipeline"]["received_window"] > 0
    assert run["pipeline"]["p99_ms"] >= run["pipeline"]["p50_ms"] > 0
    assert set(run["pipeline"]["by_output"]) <= {"recommendations", "promo-triggers"}
    assert run["relay"]["count"] > 0
    memory = result["memory"]
    assert memory["peak_rss_mb"] > 0 and memory["users_after_drain"] > 0
    assert memory["table_keys_end"].get("user-profiles", 0) > 0
    assert result["rss_mb"] == memory["peak_rss_mb"]
    assert {"user-pipeline", "room-pipeline"} <= set(result["agent_processing"])
    if "error" not in result["profile"]:
        assert result["profile"]["samples"] > 0
        assert abs(sum(result["profile"]["shares"].values()) - 1) < 0.01
        per_stage = result["profile"].get("stage_cpu_us_per_event")
        if per_stage:
            assert abs(sum(per_stage.values()) - result["profile"]["cpu_us_per_event"]) < 1
            assert "| stage | share of CPU | µs/event |" in bench_pipeline.render_markdown(
                result, "livepulse bench --smoke")
    assert result["baselines"] == {} and "scaling" not in result
    assert set(result["targets"]) == {"events_per_s", "latency_5k", "rss_1m_users",
                                      "scaling_2_workers", "engine_count_vs_quix"}


def test_results_section_replaced(tmp_path: Any) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\n## Other\n\nkept\n")
    bench_pipeline.replace_section(out, f"{bench_pipeline.SECTION} (1)\n\nfirst\n")
    bench_pipeline.replace_section(out, f"{bench_pipeline.SECTION} (2)\n\nsecond\n")
    text = out.read_text()
    assert "## Other\n\nkept" in text and "second" in text and "first" not in text
    assert text.count(bench_pipeline.SECTION) == 1
