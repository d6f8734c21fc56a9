"""Keeps ``benchmarks/bench_serving.py`` runnable (tiny sizes, no timing assertions)."""

from __future__ import annotations

from agents.sinks.embedded_redis import REDIS_SERVER_BIN, redis_server_available
from benchmarks import bench_serving
from tests.conftest import require


def test_bench_serving_smoke() -> None:
    require(redis_server_available(), f"redis-server binary ({REDIS_SERVER_BIN})")
    result = bench_serving.main(["--users", "200", "--reads", "50"])
    assert result["users"] == 200 and result["reads"] == 50
    for path in ("redis_hgetall", "redis_sink_read", "in_process_view"):
        assert result[path]["p50_us"] > 0 and result[path]["p99_us"] >= result[path]["p50_us"]
    assert 0 < result["stored_profile_bytes_avg"] <= 1024
