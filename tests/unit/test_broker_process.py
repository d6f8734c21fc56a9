"""The local broker launcher: a broker that dies at start is reported at once, with its log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from streams.broker import BrokerError, BrokerProcess


class _DiesAtStart(BrokerProcess):
    name = "dying broker"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('bad config: no listener'); "
                "sys.exit(3)"]


def test_a_broker_that_exits_at_start_fails_at_once_with_its_log(tmp_path: Path) -> None:
    broker = _DiesAtStart(log_path=tmp_path / "broker.log")
    started = time.monotonic()
    with pytest.raises(BrokerError) as failure:
        broker.start(timeout=60)
    assert time.monotonic() - started < 30  # not the whole readiness timeout
    message = str(failure.value)
    assert "exited at start with code 3" in message
    assert "bad config: no listener" in message
    assert broker.process is None


class _FailsToPrepare(BrokerProcess):
    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.workdir = workdir
        self.cleaned = False

    def prepare(self) -> None:
        self.workdir.mkdir()
        raise BrokerError("formatting the log dir failed")

    def command(self) -> list[str]:  # pragma: no cover (never reached)
        raise AssertionError

    def cleanup(self) -> None:
        self.cleaned = True


def test_what_prepare_made_is_cleaned_up_when_it_fails(tmp_path: Path) -> None:
    broker = _FailsToPrepare(tmp_path / "kraft")
    with pytest.raises(BrokerError, match="formatting"):
        broker.start()
    assert broker.cleaned and broker.process is None
