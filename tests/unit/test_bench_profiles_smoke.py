"""Smoke test of benchmarks/bench_profiles.py: a tiny run, real stores, JSON shape only."""

from __future__ import annotations

import importlib.util

import orjson
import pytest

from benchmarks import bench_profiles

HAVE_ROCKSDICT = importlib.util.find_spec("rocksdict") is not None


def test_small_run_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    store = "both" if HAVE_ROCKSDICT else "memory"
    result = bench_profiles.main(["--users", "2000", "--store", store, "--cost-users", "300",
                                  "--repeats", "1", "--partitions", "2"])
    printed = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == result

    expected_stores = {"memory", "rocksdb"} if HAVE_ROCKSDICT else {"memory"}
    assert set(result["stores"]) == expected_stores
    assert {"users", "events_per_user_mean", "seed", "stores", "skipped", "apply_cost",
            "profile_bytes", "total_s"} <= set(result)
    for name, run in result["stores"].items():
        assert run["store"] == name
        assert run["users"] == 2000
        assert run["events"] >= 2000  # every user has at least one event
        assert run["store_class"] == (
            "faust.stores.rocksdb.Store" if name == "rocksdb" else "faust.stores.memory.Store")
        sizes = run["profile_bytes"]
        assert 0 < sizes["p50"] <= sizes["p99"] <= sizes["max"] <= 1024
        assert sizes["over_1024"] == 0
        assert {"start", "after_load", "after_random_reads", "peak",
                "held_per_user_bytes"} <= set(run["rss_mib"])
        assert run["fold_events_per_s"] > 0 and run["gc_s"] >= 0
        assert run["sample_users"] > 0
        assert set(run["lifecycle_sample"]) <= {"new", "active", "engaged", "loyal",
                                                "at_risk", "dormant"}
    if HAVE_ROCKSDICT:
        rocks = result["stores"]["rocksdb"]
        assert rocks["driver"] == "rocksdict" and rocks["disk_mib"] > 0
        # same seed, same traffic: both stores hold byte-for-byte the same profiles
        assert rocks["profile_bytes"] == result["stores"]["memory"]["profile_bytes"]
    cost = result["apply_cost"]
    assert cost["events"] > 0
    assert {"object_apply_us", "dict_fold_us", "dict_fold_orjson_us",
            "dump_us_per_profile"} <= set(cost)
