"""First run: `make demo` installs the runtime only; the demo keeps to a Redis of its own."""

from __future__ import annotations

import re
import tomllib

from agents.demo import demo_scenarios, start_private_redis
from agents.sinks.embedded_redis import ping, redis_server_available
from config.settings import Settings
from tests.conftest import REPO, require

TOOLCHAIN = ("pytest", "hypothesis", "ruff", "chdb", "quixstreams", "moto", "py-spy")


def test_the_demo_installs_no_test_toolchain() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    assert not [tool for tool in TOOLCHAIN if re.search(rf"\b{tool}\b", runtime)]
    test_extra = " ".join(project["optional-dependencies"]["test"])
    assert all(re.search(rf"\b{tool}\b", test_extra) for tool in TOOLCHAIN)
    makefile = (REPO / "Makefile").read_text()
    targets = dict(re.findall(r"^(\w+): (\S+)", makefile, re.MULTILINE))
    recipes = dict(re.findall(r"^(\$\(\w+\)): pyproject.toml\n((?:\t.*\n)+)", makefile,
                              re.MULTILINE))
    assert "pip install --quiet -e .\n" in recipes[targets["demo"]]
    assert "-e '.[test]'" in recipes[targets["test"]]
    assert targets["demo"] != targets["test"]
    assert (REPO / ".ci/run").read_text().rstrip().endswith("exec make test")


def test_the_demo_redis_is_private(tmp_path) -> None:
    require(redis_server_available(), "redis-server binary")
    server = start_private_redis(Settings(data_dir=str(tmp_path)))
    assert server is not None
    try:
        assert server.port != 6379 and server.url == f"redis://127.0.0.1:{server.port}/0"
        assert ping(server.port)
    finally:
        server.stop()
    assert not ping(server.port)


def test_an_open_ended_demo_keeps_injecting_scenarios() -> None:
    rooms = [f"room-{i}" for i in range(6)]
    runs = demo_scenarios(None, rooms)
    assert runs[0][0] <= 60  # the first alert comes within the first minute or so
    assert {name for _, name, _, _ in runs} == {"bot_click_flood", "viewer_drop",
                                                "gift_fraud_burst", "checkout_outage"}
    hour = [run for run in runs if run[0] < 3600]
    assert len(hour) == 4 * 30 and len({room for _, _, room, _ in hour} - {None}) == 6
    assert [at for at, *_ in runs] == sorted(at for at, *_ in runs)
    assert demo_scenarios(60.0, rooms) and demo_scenarios(10.0, rooms) == []
