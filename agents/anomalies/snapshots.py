"""Signed snapshots of the anomaly monitor's detectors, so a restart does not re-warm them.

What is saved is :meth:`~agents.anomalies.monitor.AnomalyMonitor.learned_state`: every
watched room's detectors and usual levels, the users' population detector and the system's
detectors. Per-user tracks (which name users) and incidents are never saved, so an erasure
(``livepulse forget``) has nothing to rewrite here. The format is the models' one
(:mod:`online_models.snapshot`: HMAC-signed, atomically written, the last few kept, a refused
file falls back to the next older one), under the name :data:`NAME` in the models' snapshot
directory and with their key.

>>> import tempfile
>>> from agents.anomalies.monitor import AnomalyMonitor
>>> from online_models.snapshot import SnapshotStore
>>> snaps = DetectorSnapshots(SnapshotStore(tempfile.mkdtemp()), b"k" * 32)
>>> monitor = AnomalyMonitor(system_id="w1")
>>> monitor.system.n = 42
>>> snaps.save(monitor) > 0
True
>>> fresh = AnomalyMonitor(system_id="w1")
>>> snaps.restore(fresh)["samples"], fresh.system.n
(42, 42)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.anomalies.monitor import AnomalyMonitor
from online_models.snapshot import SnapshotError, SnapshotStore, load_snapshot, save_snapshot

log = logging.getLogger(__name__)

NAME = "anomaly_detectors"
VERSION = "1"


class DetectorSnapshots:
    """Save and restore an :class:`AnomalyMonitor`'s learned state in ``store``."""

    def __init__(self, store: SnapshotStore, key: bytes, *,
                 refused: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.key = key
        self.refused = refused            # called with each refusal's reason (a metric)
        self.child: int | None = None     # pid of a forked save in flight
        self.fork_seconds = 0.0

    def save(self, monitor: AnomalyMonitor) -> int:
        """Snapshot ``monitor`` now (in this process); return the bytes written."""
        blob = save_snapshot(monitor.learned_state(), None, key=self.key, model_name=NAME,
                             version=VERSION)
        self.store.save(NAME, blob)
        return len(blob)

    async def save_forked(self, monitor: AnomalyMonitor) -> int:
        """:meth:`save` in a forked child (a copy-on-write image of this instant) while the
        event loop goes on: pickling 2 000 rooms' detectors takes seconds. In-process where
        ``fork`` is missing."""
        if not hasattr(os, "fork"):
            return self.save(monitor)
        read_end, write_end = os.pipe()
        forking = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: pickle, sign, write, leave (no logging, no sockets)
            code = 1
            try:
                os.close(read_end)
                os.write(write_end, str(self.save(monitor)).encode())
                code = 0
            finally:
                os._exit(code)
        self.fork_seconds = time.perf_counter() - forking
        os.close(write_end)
        self.child = pid
        try:
            report = await asyncio.to_thread(os.read, read_end, 64)
            _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        finally:
            os.close(read_end)
            self.child = None
        if os.waitstatus_to_exitcode(status) != 0 or not report:
            raise SnapshotError(f"detector snapshot child failed (wait status {status})")
        return int(report)

    def wait_child(self) -> None:
        """Let a forked save in flight finish (before the last one, at shutdown)."""
        pid, self.child = self.child, None
        if pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def restore(self, monitor: AnomalyMonitor) -> dict[str, Any]:
        """Load the newest snapshot that verifies into ``monitor`` (before its first tick);
        a refused or unusable one is logged and the next older one tried. Returns what was
        restored (``{}``: nothing, the detectors start cold)."""

        def refused(path: Path, error: SnapshotError) -> None:
            log.warning("refusing %s snapshot %s: %s", NAME, path.name, error)
            if self.refused is not None:
                self.refused(error.reason)

        for path in self.store.history(NAME):   # newest first
            try:
                state, meta = load_snapshot(path, key=self.key, expected_model=NAME)
                monitor.restore_learned(state)
            except SnapshotError as error:
                refused(path, error)
                continue
            except (KeyError, TypeError, ValueError) as error:  # a payload of another layout
                refused(path, SnapshotError(f"unusable detector state: {error}", "payload"))
                continue
            return {"file": path.name, "created_at": meta.get("created_at"),
                    "rooms": len(state["rooms"]), "samples": monitor.system.n}
        return {}
