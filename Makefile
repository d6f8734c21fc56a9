# Two set-up commands, both self-contained on a fresh machine:
#   make demo    the main job: embedded broker, worker, simulator, web (http://127.0.0.1:6066/)
#   make test    the whole test suite (what .ci/run runs)
# `make demo` installs the runtime dependencies only; `make test` adds the `test` extra.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUM    := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
RUN_STAMP  := $(VENV)/.installed-run-$(SUM)
TEST_STAMP := $(VENV)/.installed-test-$(SUM)
DURATION ?=

.PHONY: demo test lint install clean

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	rm -f $(VENV)/.installed-run-*; touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*; touch $(RUN_STAMP) $(TEST_STAMP)

install: $(RUN_STAMP)

demo: $(RUN_STAMP)
	$(VENV)/bin/livepulse demo $(if $(DURATION),--duration $(DURATION),)

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .

test: $(TEST_STAMP)
	bash .ci/system-deps chromium fonts-wqy-microhei redis-server clickhouse-server prometheus
	$(VENV)/bin/ruff check .
	$(VENV)/bin/livepulse schemas --check
	$(PY) -m dashboards.grafana_build --check
	$(PY) -m pytest -p no:cacheprovider -rsx --doctest-modules streams agents config online_models dashboards tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) livepulse-data
