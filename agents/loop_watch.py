"""Event-loop lag: how late the worker's loop runs, and what held it when it stalled.

Every handler, timer, web view and Kafka client of a worker shares one asyncio loop, so a
single slow step delays every event behind it. Two parts:

* a task sleeps ``TICK_S`` and observes how much later than asked it woke up, into
  ``livepulse_event_loop_lag_seconds`` (a histogram: its p99 is the latency floor the loop
  adds to every event);
* ``livepulse_gc_pause_seconds{generation}``: each garbage collection's pause (a full
  collection walks every tracked object: with hundreds of thousands of profiles and
  sessions that is a loop stall of its own);
* a daemon thread watches the task's heartbeat; when the loop has not ticked for
  ``stall_ms`` it logs the main thread's stack once for that stall (what was running), and
  counts it in ``livepulse_event_loop_stalls_total``.

>>> watch = LoopWatch(None, stall_ms=0)
>>> watch.stall_s is None
True
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger("livepulse.loop")

TICK_S = 0.02
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STACK_FRAMES = 12


class LoopWatch:
    """Measure the loop's lag; report stalls longer than ``stall_ms`` (0: no stall reports)."""

    def __init__(self, registry: CollectorRegistry | None, stall_ms: float) -> None:
        self.stall_s = stall_ms / 1000 if stall_ms > 0 else None
        self.beat = time.monotonic()
        self.lag = self.stalls = None
        if registry is not None:
            self.lag = Histogram("livepulse_event_loop_lag_seconds",
                                 "How much later than asked the worker's event loop woke a "
                                 "sleeping task (every 20 ms).", buckets=LAG_BUCKETS,
                                 registry=registry)
            self.stalls = Counter("livepulse_event_loop_stalls_total",
                                  "Times the event loop did not run for longer than "
                                  "LIVEPULSE_LOOP_STALL_MS (each logged with its stack).",
                                  registry=registry)
            self.gc_pause = Histogram("livepulse_gc_pause_seconds",
                                      "Pause of each garbage collection, by generation.",
                                      ["generation"], buckets=LAG_BUCKETS, registry=registry)
            self._gc_children = [self.gc_pause.labels(str(g)) for g in range(3)]
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._gc_started = 0.0

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """``gc.callbacks`` hook: time each collection."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self._gc_children[info["generation"]].observe(time.perf_counter() -
                                                          self._gc_started)
            self._gc_started = 0.0

    async def run(self) -> None:
        """The ticking task: runs until cancelled."""
        self.beat = time.monotonic()
        if self.lag is not None:
            gc.callbacks.append(self.on_gc)
        if self.stall_s is not None:
            threading.Thread(target=self._watch, name="loop-watch", daemon=True).start()
        try:
            while True:
                asked = time.monotonic()
                await asyncio.sleep(TICK_S)
                self.beat = now = time.monotonic()
                if self.lag is not None:
                    self.lag.observe(max(0.0, now - asked - TICK_S))
        finally:
            self._stop.set()
            if self.on_gc in gc.callbacks:
                gc.callbacks.remove(self.on_gc)

    def _watch(self) -> None:
        assert self.stall_s is not None
        reported = 0.0  # heartbeat of the stall already reported
        while not self._stop.wait(self.stall_s / 4):
            beat = self.beat
            held = time.monotonic() - beat
            if held < self.stall_s or beat == reported:
                continue
            reported = beat
            frame = sys._current_frames().get(self._main)
            stack = "".join(traceback.format_stack(frame, limit=STACK_FRAMES)) if frame else ""
            if self.stalls is not None:
                self.stalls.inc()
            log.warning("event loop held for %.0f ms so far; main thread is in:\n%s",
                        held * 1000, stack)


def register(app: Any, registry: CollectorRegistry, stall_ms: float) -> LoopWatch:
    """Run a :class:`LoopWatch` as a task of ``app``."""
    watch = LoopWatch(registry, stall_ms)

    @app.task
    async def watch_loop() -> None:
        await watch.run()

    return watch
