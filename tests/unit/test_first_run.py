"""First run: `make demo` installs the runtime only; the demo keeps to a Redis of its own."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO

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

