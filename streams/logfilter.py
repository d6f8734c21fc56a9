"""Rate-limited logging of the Kafka client's repeated errors.

While the broker is unreachable, aiokafka logs every failed connection, metadata refresh,
fetch and produce retry at ERROR/WARNING: about 140 lines per second in a worker, which buries
everything else. :class:`RepeatedLogFilter` lets one record per logger and message template
through every ``interval_s`` and tells, on the next one it lets through, how many were held
back. Nothing below WARNING is touched, and every distinct message is still logged once.

>>> now = [0.0]
>>> repeated = RepeatedLogFilter(interval_s=10, clock=lambda: now[0])
>>> def rec(msg: str) -> logging.LogRecord:
...     return logging.LogRecord("aiokafka", logging.ERROR, "", 0, msg, ("n1",), None)
>>> [repeated.filter(rec("Unable connect to %s")) for _ in range(3)]
[True, False, False]
>>> now[0] = 12.0
>>> first_again = rec("Unable connect to %s"); repeated.filter(first_again)
True
>>> first_again.getMessage()
'Unable connect to n1 (2 more like this in the last 12 s)'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# the aiokafka loggers that repeat while a broker is away (filters do not apply to children)
KAFKA_CLIENT_LOGGERS = ("aiokafka", "aiokafka.client", "aiokafka.conn", "aiokafka.cluster",
                        "aiokafka.consumer.fetcher", "aiokafka.consumer.group_coordinator",
                        "aiokafka.consumer.consumer", "aiokafka.producer.sender",
                        "aiokafka.producer.producer")


class RepeatedLogFilter(logging.Filter):
    """At most one WARNING-or-worse record per (logger, message template) per interval."""

    def __init__(self, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (last shown, held)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        shown, held = self._seen.get(key, (None, 0))
        if shown is not None and now - shown < self.interval_s:
            self._seen[key] = (shown, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held and shown is not None:  # the added text has no "%": safe for either format
            record.msg = f"{record.msg} ({held} more like this in the last {now - shown:.0f} s)"
        return True


def quiet_kafka_client_logs(interval_s: float = 10.0) -> None:
    """Install one :class:`RepeatedLogFilter` on aiokafka's noisy loggers (idempotent)."""
    for name in KAFKA_CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatedLogFilter) for f in logger.filters):
            logger.addFilter(RepeatedLogFilter(interval_s))
