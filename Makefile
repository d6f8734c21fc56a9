# Two set-up commands, both self-contained on a fresh machine:
#   make demo    the main job: embedded broker, worker, simulator, web (http://127.0.0.1:6066/)
#   make test    the whole test suite (what .ci/run runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DURATION ?=

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/livepulse demo $(if $(DURATION),--duration $(DURATION),)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	bash .ci/system-deps chromium fonts-wqy-microhei redis-server clickhouse-server prometheus
	$(VENV)/bin/ruff check .
	$(VENV)/bin/livepulse schemas --check
	$(PY) -m dashboards.grafana_build --check
	$(PY) -m pytest -p no:cacheprovider -rs --doctest-modules streams agents config online_models dashboards tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) livepulse-data
