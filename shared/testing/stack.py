"""Real chatgw processes for integration tests and benchmarks: workers and gateways on unused ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

from cli.embedded_redis import free_port

# shared/testing/stack.py → the repository root (the editable install runs from the checkout).
ROOT = Path(__file__).resolve().parents[2]


def wait_for(
    predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> None:
    """Poll a condition until it holds; fail with ``what`` when it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")


class Proc:
    """``chatgw <role>`` as a child process (or ``argv``, e.g. bench/baseline_app.py), logging to a file."""

    def __init__(self, role: str, env: dict[str, str], log_path: Path, argv: list[str] | None = None) -> None:
        self.role = role
        self.env = env
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.popen = subprocess.Popen(
            argv or [sys.executable, "-m", "cli.main", role],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
        self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class Gateway(Proc):
    """A process serving ``/ws`` and ``/readyz`` on ``CHATGW_PORT``: chatgw's gateway unless ``argv``."""

    def __init__(self, env: dict[str, str], log_path: Path, argv: list[str] | None = None) -> None:
        self.port = int(env["CHATGW_PORT"])
        super().__init__("gateway", env, log_path, argv)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return self.readyz_status(timeout_s=1) == 200

    def readyz_status(self, timeout_s: float = 2) -> int:
        """/readyz's HTTP status (200 ready, 503 not); 0 when the gateway does not answer."""
        try:
            with urllib.request.urlopen(f"{self.http}/readyz", timeout=timeout_s) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0


class Stack:
    """A key prefix of its own, plus the gateways and workers a test asks for."""

    def __init__(self, redis_url: str, log_dir: Path, **settings: str) -> None:
        self.redis_url = redis_url
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.log_dir = log_dir
        self.settings = settings
        self.gateways: list[Gateway] = []
        self.workers: list[Proc] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATGW_")}
        env.update(
            {
                "CHATGW_REDIS_URL": self.redis_url,
                "CHATGW_KEY_PREFIX": self.prefix,
                "CHATGW_OFFLINE_TOKEN_DELAY_MS": "5",
                # Tests and benchmarks ask the same questions again and expect the model to answer;
                # the answer cache is tested with it on (tests/integration/test_answer_cache.py).
                "CHATGW_CACHE": "off",
                "CHATGW_LOG_LEVEL": "info",
                # Per-stack files: tests never share conversation memory or an index by accident.
                "CHATGW_CHECKPOINT_PATH": str(self.log_dir / "checkpoints.sqlite"),
                "CHATGW_INDEX_PATH": str(self.log_dir / "index"),
                "PYTHONPATH": str(ROOT),
                **self.settings,
                **extra,
            }
        )
        return env

    def start_worker(self, wait: bool = True, **extra: str) -> Proc:
        index = len(self.workers)
        worker = Proc("worker", self.env(**extra), self.log_dir / f"worker-{index}.log")
        self.workers.append(worker)
        if wait:
            self.wait_worker(worker)
        return worker

    @staticmethod
    def wait_worker(worker: Proc) -> None:
        wait_for(lambda: "ready (concurrency" in worker.output() or not worker.alive(), what="worker boot")
        assert worker.alive(), worker.output()

    def start_both(self) -> None:
        """A worker and a gateway, booting side by side."""
        worker = self.start_worker(wait=False)
        self.start_gateway()
        self.wait_worker(worker)

    def start_gateway(self, wait: bool = True, port: int | None = None, **extra: str) -> Gateway:
        index = len(self.gateways)
        gateway = Gateway(
            self.env(CHATGW_PORT=str(port or free_port()), **extra), self.log_dir / f"gateway-{index}.log"
        )
        self.gateways.append(gateway)
        if wait:
            wait_for(lambda: gateway.ready() or not gateway.alive(), what="gateway ready")
            assert gateway.alive(), gateway.output()
        return gateway

    def stop(self) -> None:
        for proc in [*self.gateways, *self.workers]:
            proc.stop()
        self.delete_keys()

    def delete_keys(self) -> None:
        """Remove every key under this stack's prefix (a test leaves nothing behind in Redis)."""
        try:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
            try:
                batch: list[bytes] = []
                for key in client.scan_iter(match=f"{self.prefix}:*", count=1000):
                    batch.append(key)
                    if len(batch) >= 500:
                        client.unlink(*batch)
                        batch.clear()
                if batch:
                    client.unlink(*batch)
            finally:
                client.close()
        except redis.RedisError:
            pass  # the test's own Redis is already gone: nothing to clean
