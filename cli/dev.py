"""`chatgw dev`: the one-command local run — Redis (embedded if needed), a worker and a gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from types import FrameType

from cli.embedded_redis import EmbeddedRedis
from cli.ingest import ensure_sample_index
from shared.errors import ChatgwError
from shared.settings import Settings


def _wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _ensure_index(settings: Settings) -> None:
    """First run: ingest the bundled sample corpus so answers come with sources out of the box."""
    try:
        report = ensure_sample_index(settings)
    except ChatgwError as exc:  # e.g. an embeddings endpoint that is down: start anyway, without sources
        print(f"chatgw dev: could not ingest the sample corpus ({exc.message}); answers have no sources")
        return
    if report is not None:
        print(
            f"chatgw dev: no index at {settings.index_path}; ingested the sample corpus "
            f"({len(report.added)} files, {report.chunks_total} chunks, {report.seconds:.1f} s)"
        )


def run_dev(settings: Settings) -> int:
    _ensure_index(settings)
    embedded: EmbeddedRedis | None = None
    env = dict(os.environ)
    if settings.redis_url is None:
        embedded = EmbeddedRedis().start()
        env["CHATGW_REDIS_URL"] = embedded.url
        print(f"chatgw dev: started an embedded Redis at {embedded.url}")
    processes: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for role in ("worker", "gateway"):
            processes.append(subprocess.Popen([sys.executable, "-m", "cli.main", role], env=env))
        base = f"http://{settings.host}:{settings.port}"
        if _wait_ready(f"{base}/readyz", processes):
            ws = f"ws://{settings.host}:{settings.port}/ws"
            print(
                f"\nchatgw is running: {ws}\n"
                f"  try:  wscat -c {ws} -H 'Authorization: Bearer dev:alice'\n"
                '  then: {"type":"chat","content":"How does resume work after a dropped connection?"}\n'
                "Press Ctrl-C to stop.\n",
                flush=True,
            )
        while not stopping and all(p.poll() is None for p in processes):
            time.sleep(0.2)
        return 0 if stopping else 1
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if embedded is not None:
            embedded.stop()
        print("chatgw dev: stopped")
