"""Redis restarts (AOF on): gateways and workers reconnect by themselves; no run is left silent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cli.embedded_redis import EmbeddedRedis
from client import ResilientClient
from shared.testing.invariants import assert_run_invariants
from shared.testing.stack import Stack, wait_for


async def test_redis_restart_with_aof(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    redis = EmbeddedRedis(appendonly=True, data_dir=data).start()
    stack = Stack(
        redis.url,
        tmp_path,
        CHATGW_OFFLINE_TOKEN_DELAY_MS="50",
        CHATGW_RUN_LEASE_S="2",
        CHATGW_SWEEP_INTERVAL_S="0.5",
    )
    try:
        stack.start_worker()
        gateway = stack.start_gateway()
        async with ResilientClient([gateway.url], "dev:alice", max_backoff_s=0.5) as client:
            run_id = (await client.chat("survive a Redis restart"))["run_id"]
            while sum(e["type"] == "token" for e in client.follow(run_id).events) < 3:
                await asyncio.sleep(0.02)
            redis.kill()
            wait_for(lambda: gateway.readyz_status() == 503, 15, what="/readyz to report not ready")
            await asyncio.sleep(1.0)  # a real outage, longer than a blip
            redis = EmbeddedRedis(port=redis.port, appendonly=True, data_dir=data).start()
            wait_for(lambda: gateway.readyz_status() == 200, 30, what="/readyz to recover")
            run = await client.wait(run_id, timeout=60)
            assert_run_invariants(run.events)
            assert run.terminal is not None
            # The same processes serve new work, without a restart.
            second = (await client.chat("and after it?"))["run_id"]
            after = await client.wait(second, timeout=30)
            assert after.terminal is not None and after.terminal["type"] == "run.completed"
        assert all(p.alive() for p in [*stack.gateways, *stack.workers])
    finally:
        stack.stop()
        redis.stop()
