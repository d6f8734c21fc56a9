"""`livepulse demo --duration N`: the main job end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.sinks.embedded_redis import redis_server_available
from streams.broker import free_port
from tests.conftest import REPO, require

pytestmark = pytest.mark.integration


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def test_demo_runs_and_summarises(tmp_path: Path) -> None:
    require(redis_server_available(), "redis-server binary (the demo starts its own Redis)")
    env = {**os.environ, "LIVEPULSE_DATA_DIR": str(tmp_path / "data"),
           "LIVEPULSE_WEB_PORT": str(free_port()), "LIVEPULSE_SIM_BAD_RATE": "0.01",
           "LIVEPULSE_SIM_RATE": "250",
           # nothing answers there: the demo starts a private redis-server on that port
           "LIVEPULSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    env.pop("LIVEPULSE_KAFKA_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "agents.cli", "demo", "--duration", "25"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(5)
    running_children = descendants(proc.pid)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-4000:]
    summary = json.loads(out.strip().splitlines()[-1])

    assert summary["events_out"]["livepulse.room-insights"] > 0
    assert summary["events_in"]["livepulse.live-events"] > 0
    assert summary["events_in"]["livepulse.clicks"] > 0
    # every injected bad event was dead-lettered and counted, none was lost
    assert summary["bad_injected"] > 0
    assert summary["dead_letters"] == summary["bad_injected"]
    assert summary["events_out"]["livepulse.dead-letter"] == summary["bad_injected"]
    good = sum(summary["produced"].values()) - summary["bad_injected"]
    assert sum(summary["events_in"].values()) == good
    assert summary["e2e_latency_p50_ms"] is not None and summary["e2e_latency_p99_ms"] > 0
    assert summary["clean_shutdown"] is True
    # progress every few seconds while it runs, then a plain summary before the JSON line
    progress = re.findall(r"^livepulse demo: (\d+) s · sent [\d,]+ \(\d+/s\) · processed "
                          r"[\d,]+ \(\d+/s\) · lag [\d,]+ · p99 .+ · outputs [\d,]+ · "
                          r"incidents \d+ open, \d+ seen$", err, re.MULTILINE)
    assert len(progress) >= 3, err[-3000:]
    assert summary["lag_at_end"] == 0
    assert ("all processed (lag 0 at the end" in err) is summary["kept_up"], err[-2000:]
    assert "every process stopped cleanly" in err
    # what a host and an ad system see: every room with every insight group, a profile with
    # RFM, affinities and tags, and the same documents in Redis
    serving = summary["serving"]
    assert serving["rooms_listed"] == 6
    assert serving["rooms_with_all_groups_nonzero"] == serving["rooms_listed"]
    assert serving["profile_groups_present"] == ["rfm", "affinities", "tags"]
    assert serving["redis_rooms"] == serving["rooms_listed"]
    assert serving["redis_profile_matches_api"] is True
    # broker, Redis and worker children existed while running, and none is left
    assert len(running_children) >= 3
    leftovers = [pid for pid in running_children if Path(f"/proc/{pid}").exists()
                 and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
    assert leftovers == []


def test_ctrl_c_stops_everything_cleanly(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) mid-run: the summary is still printed and no child survives."""
    import signal

    port = free_port()
    env = {**os.environ, "LIVEPULSE_DATA_DIR": str(tmp_path / "data"),
           "LIVEPULSE_WEB_PORT": str(port)}
    env.pop("LIVEPULSE_KAFKA_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "agents.cli", "demo"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    banner = []
    for line in proc.stdout:  # wait until the demo says where to look: workers are ready
        banner.append(line)
        if "logs " in line:
            break
    # open-ended: the scenarios repeat, and Redis is the demo's own, not one on 6379
    assert any("scenarios" in line and "every 120 s" in line for line in banner), banner
    assert any(line.strip().startswith("kafka ") for line in banner), banner
    time.sleep(3)
    children = descendants(proc.pid)
    assert len(children) >= 2
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["clean_shutdown"] is True
    assert sum(summary["events_in"].values()) > 0
    assert summary["redis"] is None or ":6379/" not in summary["redis"]
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert alive == []
