"""The Grafana dashboards: files equal the code, panels use provisioned data sources, the
ClickHouse panels run exactly the queries of ``dashboards.clickhouse_sql``, layouts fit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from dashboards import GRAFANA_DIR
from dashboards.clickhouse_sql import QUERIES
from dashboards.grafana_build import (
    CLICKHOUSE,
    GRID_WIDTH,
    PROMETHEUS,
    build,
    differences,
    grafana_sql,
    panels_of,
    render,
)
from tests.conftest import REPO

PROVISIONING = REPO / "config" / "grafana" / "provisioning"
DASHBOARD_FILES = sorted(GRAFANA_DIR.glob("*.json"))


def provisioned_uids() -> dict[str, str]:
    config = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())
    return {d["uid"]: d["type"] for d in config["datasources"]}


def test_files_equal_what_the_code_builds() -> None:
    assert [p.name for p in DASHBOARD_FILES] == sorted(build())
    assert differences() == []
    for path in DASHBOARD_FILES:
        assert path.read_text(encoding="utf-8") == render(build()[path.name])
    done = subprocess.run([sys.executable, "-m", "dashboards.grafana_build", "--check"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    for name, board in build().items():
        (tmp_path / name).write_text(render(board), encoding="utf-8")
    assert differences(tmp_path) == []
    edited = tmp_path / "livepulse-ops.json"
    edited.write_text(edited.read_text().replace("Events in", "Events"), encoding="utf-8")
    (tmp_path / "extra.json").write_text("{}")
    assert differences(tmp_path) == ["extra.json", "livepulse-ops.json"]


def test_every_datasource_used_is_provisioned_with_its_type() -> None:
    uids = provisioned_uids()
    assert uids[PROMETHEUS["uid"]] == PROMETHEUS["type"]
    assert uids[CLICKHOUSE["uid"]] == CLICKHOUSE["type"]
    for path in DASHBOARD_FILES:
        board = json.loads(path.read_text())
        used = [p["datasource"] for p in panels_of(board)]
        used += [t["datasource"] for p in panels_of(board) for t in p["targets"]]
        used += [v["datasource"] for v in board["templating"]["list"] if "datasource" in v]
        for source in used:
            assert uids.get(source["uid"]) == source["type"], (path.name, source)


def test_clickhouse_panels_run_the_dashboard_sql_and_every_query_has_a_panel() -> None:
    grafana_form = {grafana_sql(name): name for name in QUERIES}
    shown: list[str] = []
    for path in DASHBOARD_FILES:
        for panel in panels_of(json.loads(path.read_text())):
            if panel["datasource"]["uid"] != CLICKHOUSE["uid"]:
                continue
            (target,) = panel["targets"]
            assert target["rawSql"] in grafana_form, panel["title"]
            name = grafana_form[target["rawSql"]]
            assert panel["type"] == QUERIES[name].kind
            # only Grafana's own variables remain: ${db}, ${__from}, ${__to}
            assert set(re.findall(r"\$\{?\w+\}?", target["rawSql"])) <= {
                "${db}", "${__from}", "${__to}"}
            shown.append(name)
    assert sorted(shown) == sorted(QUERIES)  # each query once


def test_prometheus_panels_have_queries_and_layouts_fit() -> None:
    counts = {}
    for path in DASHBOARD_FILES:
        board = json.loads(path.read_text())
        panels = list(panels_of(board))
        counts[board["uid"]] = len(panels)
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in panels:
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= GRID_WIDTH, panel["title"]
            assert panel["targets"], panel["title"]
            if panel["datasource"]["uid"] == PROMETHEUS["uid"]:
                for target in panel["targets"]:
                    assert "livepulse" in target["expr"] or "up{" in target["expr"]
        cells = Counter((x, y) for p in panels
                        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
                        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"]))
        assert max(cells.values()) == 1, f"{path.name}: panels overlap"
    assert counts == {"livepulse-ops": 29, "livepulse-business": 20, "livepulse-models": 14,
                      "livepulse-campaigns": 14}
