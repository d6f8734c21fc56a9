"""Grafana dashboards and the host's live page."""

from pathlib import Path

HOST_PAGE_DIR = Path(__file__).with_name("host")
GRAFANA_DIR = Path(__file__).with_name("grafana")
