"""The compose topology's load balancer: deploy/nginx.conf in front of two gateways, no sticky
sessions. Skipped when nginx is not installed (`apt-get install nginx-light`)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from cli.embedded_redis import free_port
from client import ResilientClient
from shared.testing.invariants import assert_run_invariants
from shared.testing.stack import ROOT, Stack, wait_for

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


def _nginx_conf(tmp_path: Path, listen: int, gateways: list[int]) -> Path:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    for name, port in zip(("gateway-1:8000", "gateway-2:8000"), gateways, strict=True):
        conf = conf.replace(name, f"127.0.0.1:{port}")
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    conf = conf.replace(
        "events {}", f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}"
    )
    conf = conf.replace("http {", f"http {{\n  access_log {tmp_path}/access.log;", 1)
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    return path


async def test_nginx_round_robin_and_failover(redis_url: str, tmp_path: Path) -> None:
    # Short leases: a chat whose gateway dies before enqueueing it is re-sent within seconds.
    stack = Stack(
        redis_url,
        tmp_path,
        CHATGW_OFFLINE_TOKEN_DELAY_MS="20",
        CHATGW_RUN_LEASE_S="1",
        CHATGW_SWEEP_INTERVAL_S="0.3",
    )
    nginx = None
    try:
        stack.start_worker()
        first, second = stack.start_gateway(), stack.start_gateway()
        listen = free_port()
        conf = _nginx_conf(tmp_path, listen, [first.port, second.port])
        nginx = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"])
        url = f"ws://127.0.0.1:{listen}/ws"
        wait_for(lambda: (tmp_path / "nginx.pid").exists(), 10, what="nginx start")
        clients = [ResilientClient([url], f"dev:lb{i}") for i in range(4)]
        for client in clients:
            await client.start()
        run_ids = [(await c.chat(f"through the balancer {i}"))["run_id"] for i, c in enumerate(clients)]
        first.kill()  # some sockets were on it: they reconnect through nginx to the other gateway
        runs = await asyncio.gather(*(c.wait(r, timeout=60) for c, r in zip(clients, run_ids, strict=True)))
        for run in runs:
            assert_run_invariants(run.events)
            assert run.terminal is not None and run.terminal["type"] == "run.completed"
        # Round robin put some sockets on the killed gateway; they came back through nginx.
        assert sum(c.reconnects for c in clients) >= 1
        for client in clients:
            await client.close()
        assert "Upgrade" not in (tmp_path / "error.log").read_text()
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        stack.stop()
