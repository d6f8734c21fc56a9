"""Lifecycle signals shared by the embedded servers (Redis, ClickHouse) the engine may start."""

from __future__ import annotations

import signal
import subprocess


class ServerProcess:
    """A child server process: ``kill``, ``pause``/``resume`` (SIGSTOP/SIGCONT) and ``stop``.

    Subclasses start ``self.process`` and set ``stop_timeout_s``.
    """

    process: subprocess.Popen[bytes] | None = None
    stop_timeout_s: float = 5.0

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server must die too
            self.process.kill()
            self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung server)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float | None = None) -> None:
        """Terminate the server, killing it if it does not exit within ``timeout``
        (default ``stop_timeout_s``)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(self.stop_timeout_s if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.kill()
