"""A redis-server of a test's (or the chaos run's) own, with AOF, that it may stop, restart and pause.

Never the machine's Redis: fault tests take Redis away, and other processes share that one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path

import redis

from cli.embedded_redis import EmbeddedRedis


class OwnRedis:
    """One port and one data directory for life, so a restarted server reloads the same AOF."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="chatgw-own-redis-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = EmbeddedRedis(appendonly=True, data_dir=self.data_dir).start()
        self.port = self._server.port
        self.pid = self._read_pid()
        self.restarts = 0

    @property
    def url(self) -> str:
        return self._server.url

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def stop(self) -> None:
        """SIGTERM: Redis writes its AOF out and exits, so a restart loses nothing."""
        self._server.stop()

    def start(self) -> None:
        """Start again on the same port and data (returns once it answers PING, i.e. AOF loaded)."""
        self._server = EmbeddedRedis(port=self.port, appendonly=True, data_dir=self.data_dir).start()
        self.pid = self._read_pid()
        self.restarts += 1

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung Redis, not a refused one)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.resume()
        self._server.stop()

    def _read_pid(self) -> int:
        with self.client() as client:
            return int(client.info("server")["process_id"])
