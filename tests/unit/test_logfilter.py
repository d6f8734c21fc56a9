"""The rate limit on aiokafka's repeated errors (a broker outage floods the worker log)."""

from __future__ import annotations

import logging

import pytest

from streams.logfilter import KAFKA_CLIENT_LOGGERS, RepeatedLogFilter, quiet_kafka_client_logs


def test_one_line_per_template_per_interval_and_the_count_held_back(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("lp-test.kafka")
    logger.addFilter(RepeatedLogFilter(interval_s=10, clock=lambda: now[0]))
    with caplog.at_level(logging.DEBUG, logger="lp-test.kafka"):
        for step in range(50):  # 5 s of retries every 100 ms
            now[0] = step / 10
            logger.error("Unable connect to node with id %s: %s", 111, "refused")
            logger.error("Group Coordinator Request failed: %s", "NodeNotReadyError")
            logger.debug("retrying %s", step)  # below WARNING: never held back
        now[0] = 11.0
        logger.error("Unable connect to node with id %s: %s", 111, "refused")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["Unable connect to node with id 111: refused",
                      "Group Coordinator Request failed: NodeNotReadyError",
                      "Unable connect to node with id 111: refused (49 more like this in the "
                      "last 11 s)"]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 50


def test_installed_once_on_every_noisy_aiokafka_logger() -> None:
    quiet_kafka_client_logs()
    quiet_kafka_client_logs()
    for name in KAFKA_CLIENT_LOGGERS:
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, RepeatedLogFilter)]
        assert len(filters) == 1, name


def test_the_worker_keeps_the_root_level_asked_for() -> None:
    """Faust's own worker sets the root logger to DEBUG at WARN and above (for its terminal
    spinner): every library's debug call would then build a record."""
    from config.settings import Settings
    from streams.app import QuietWorker, create_app

    app = create_app(Settings.from_env({"LIVEPULSE_KAFKA_URL": "kafka-1:9092"}))
    assert app.conf.Worker is QuietWorker
    worker = QuietWorker(app, loglevel="warn")
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        worker.on_setup_root_logger(root, logging.WARNING)
        assert root.level == level and root.handlers == handlers
        assert worker.spinner is None
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
