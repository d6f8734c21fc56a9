"""Keeps ``benchmarks/bench_memory.py`` runnable: a tiny population through every
structure, each in its own subprocess; the JSON shape and positive figures only (RSS at a
few hundred users is too coarse for any per-user size check)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import bench_memory

pytestmark = pytest.mark.integration

STRUCTURES = ("profile_object", "profile_dict", "profile_store", "promo_state", "recommender",
              "propensity_pending", "leave_risk_pending", "model_host", "all")


def test_bench_memory_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench_memory.main(["--users", "1500", "--items", "2000", "--rooms", "8",
                                "--parallel", "2", "--structures", ",".join(STRUCTURES)])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("{") and any(line.startswith("TOTAL") for line in out)
    assert {"users", "bytes_per_user", "marginal_bytes_per_user", "total_bytes_per_user",
            "target_bytes_per_user", "target_met", "runs", "method"} <= set(result)
    runs: dict[str, Any] = result["runs"]
    assert set(runs) == {"driver", "driver_plain", *STRUCTURES}
    for name, run in runs.items():
        assert "error" not in run, f"{name}: {run.get('error')}"
        assert run["users"] == 1500 and run["events"] > 1500 and run["rss_end_mb"] > 0
    assert set(result["bytes_per_user"]) == {*STRUCTURES, "model_caches"}
    # structures that hold something for every user grow the process
    for name in ("profile_object", "profile_dict", "recommender", "all"):
        assert runs[name]["growth_bytes"] > 0, name
    assert result["total_bytes_per_user"] == result["bytes_per_user"]["all"] > 0
    assert runs["profile_dict"]["info"]["keys"] == 1500
    assert runs["profile_store"]["info"]["keys"] == 1500
    assert runs["propensity_pending"]["info"]["pending"] > 0
    assert runs["recommender"]["info"]["default_caps"]["max_sessions"] > 0


def test_unknown_structure_is_refused() -> None:
    with pytest.raises(SystemExit):
        bench_memory.main(["--users", "10", "--structures", "nope"])
