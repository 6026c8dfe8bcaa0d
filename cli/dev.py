"""`chatgw dev`: the one-command local run — Redis (embedded if needed), a worker and a gateway.

Everything it writes goes to CHATGW_DATA_DIR (the index, checkpoints, the embedded Redis's folder),
whatever the current folder. The children run in their own process groups: Ctrl-C reaches only this
process, which stops the gateway first (clients are told to reconnect), then the worker (its runs
finish or are handed back), then Redis, which both were using. A second Ctrl-C stops them at once.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from redis.exceptions import RedisError

from cli.children import start_child, stop_child
from cli.embedded_redis import EmbeddedRedis, free_port
from gateway.origin import OriginPolicy
from shared.errors import ChatgwError
from shared.keys import Keys
from shared.redis_factory import sync_redis_client
from shared.settings import Settings

EXIT_PORT_BUSY = 2  # like a bad setting: nothing was started
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")
GATEWAY_STOP_S = 10.0  # uvicorn's graceful shutdown is 5 s
WORKER_STOP_S = 40.0  # CHATGW_WORKER_SHUTDOWN_GRACE_S (30) plus margin


def _say(message: str) -> None:
    print(f"chatgw dev: {message}", flush=True)


def address_problem(host: str, port: int) -> str | None:
    """Why the gateway could not listen on host:port, or None. Checked before anything starts."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return f"cannot listen on {host!r}: {exc.strerror or exc}; check CHATGW_HOST / --host"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use (another `chatgw dev`?). Stop it, or pick "
                    f"another port: chatgw dev --port {port + 1}"
                )
            if exc.errno == errno.EACCES:
                return f"no permission to listen on port {port}; use a port above 1023 (--port)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host / --port"
    return None


def _gateway_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _worker_ready(settings: Settings, redis_url: str) -> bool:
    """A worker's heartbeat is in Redis: it is consuming the queue."""
    client = sync_redis_client(settings, url=redis_url)
    try:
        return next(client.scan_iter(match=Keys(settings.key_prefix).workers_pattern()), None) is not None
    except RedisError:
        return False
    finally:
        client.close()


def _wait_ready(
    checks: list[Callable[[], bool]], processes: list[subprocess.Popen[bytes]], stopping: list[bool]
) -> bool:
    deadline = time.monotonic() + 60.0
    pending = list(checks)
    while time.monotonic() < deadline and not stopping:
        if any(p.poll() is not None for p in processes):
            return False
        pending = [check for check in pending if not check()]
        if not pending:
            return True
        time.sleep(0.2)
    return False


def _ensure_index(settings: Settings) -> None:
    """First run: ingest the bundled sample corpus so answers come with sources out of the box."""
    from cli.ingest import ensure_sample_index  # the agent's libraries: only after the port check

    try:
        report = ensure_sample_index(settings)
    except ChatgwError as exc:  # e.g. an embeddings endpoint that is down: start anyway, without sources
        _say(f"could not ingest the sample corpus ({exc.message}); answers have no sources")
        return
    if report is not None and not (report.updated or report.removed or report.unchanged):
        _say(
            f"no index at {settings.index_path} yet; ingested the sample corpus "
            f"({len(report.added)} files, {report.chunks_total} chunks, {report.seconds:.1f} s)"
        )
    elif report is not None:
        changed = len(report.added) + len(report.updated) + len(report.removed)
        _say(f"brought the sample corpus in {settings.index_path} up to date ({changed} file(s) changed)")


def _self_command() -> str:
    """How the user started us, so printed commands can be pasted as they are (e.g. .venv/bin/chatgw)."""
    argv0 = sys.argv[0] if sys.argv else ""
    return shlex.quote(argv0) if os.path.basename(argv0) == "chatgw" else "chatgw"


@dataclass
class _Children:
    gateway: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    redis: EmbeddedRedis | None = None

    def stop(self) -> None:
        # The order matters: the gateway closes client sockets with 1012 while Redis is still up, the
        # worker finishes or hands back its runs, and Redis goes last, so nobody logs a lost connection.
        if self.gateway is not None:
            stop_child(self.gateway, GATEWAY_STOP_S)
        if self.worker is not None:
            stop_child(self.worker, WORKER_STOP_S)
        if self.redis is not None:
            self.redis.stop()


def _banner(settings: Settings, ws: str) -> str:
    me = _self_command()
    origins = OriginPolicy.for_settings(settings).describe()
    return (
        f"\nchatgw is running: {ws}\n"
        f"  web:   {ws.replace('ws://', 'http://', 1).removesuffix('/ws')}/  (the bundled web chat)\n"
        f"  chat:  {me} chat{'' if ws.endswith(':8000/ws') else f' --url {ws}'}\n"
        f"  or:    wscat -c {ws} -H 'Authorization: Bearer dev:alice'\n"
        '  then:  {"type":"chat","content":"How does resume work after a dropped connection?"}\n'
        f"  {origins}\n"
        f"  data:  {settings.data_dir}\n"
        "Press Ctrl-C to stop.\n"
    )


def run_dev(settings: Settings) -> int:
    port = settings.port or free_port()
    problem = address_problem(settings.host, port)
    if problem is not None:
        print(f"chatgw dev: {problem}", file=sys.stderr, flush=True)
        return EXIT_PORT_BUSY
    stopping: list[bool] = []  # appended to by the signal handler: one entry per Ctrl-C

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(True)
        if len(stopping) > 1 and children.gateway is not None:
            # A second Ctrl-C: stop waiting for a graceful shutdown.
            for process in (children.gateway, children.worker):
                if process is not None and process.poll() is None:
                    process.kill()

    children = _Children()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    _ensure_index(settings)
    env = {
        **os.environ,
        "CHATGW_HOST": settings.host,
        "CHATGW_PORT": str(port),
        "CHATGW_DATA_DIR": str(settings.data_dir),
        "CHATGW_INDEX_PATH": str(settings.index_path),
        "CHATGW_CHECKPOINT_PATH": str(settings.checkpoint_path),
    }
    try:
        redis_url = settings.redis_url
        if redis_url is None:
            children.redis = EmbeddedRedis(data_dir=settings.data_dir / "redis", own_group=True).start()
            redis_url = children.redis.url
            _say(f"started an embedded Redis at {redis_url}")
        env["CHATGW_REDIS_URL"] = redis_url
        command = [sys.executable, "-m", "cli.main"]
        children.worker = start_child([*command, "worker"], env)
        children.gateway = start_child([*command, "gateway"], env)
        host = "127.0.0.1" if settings.host in _WILDCARD_HOSTS else settings.host
        host = f"[{host}]" if ":" in host else host
        processes = [children.worker, children.gateway]
        checks = [
            lambda: _gateway_ready(f"http://{host}:{port}/readyz"),
            lambda: _worker_ready(settings, redis_url),
        ]
        if _wait_ready(checks, processes, stopping):
            print(_banner(settings, f"ws://{host}:{port}/ws"), flush=True)
        while not stopping and all(p.poll() is None for p in processes):
            time.sleep(0.2)
        if not stopping:
            _say("a child process exited; stopping the others")
        return 0 if stopping else 1
    finally:
        if stopping:
            _say("stopping: gateway, then worker, then Redis (Ctrl-C again to stop at once)")
        children.stop()
        _say("stopped")
