"""No silent sockets: when Redis goes away, every socket hears of it within 5 s (an `error` frame
`unavailable`, then close 1013), a socket that connects meanwhile is told at once, /readyz answers
503, and once Redis is back the resilient client resumes its run to the end with no gap or dup."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cli.embedded_redis import EmbeddedRedis
from client import ChatgwConnection, ResilientClient
from shared.errors import CloseCode, ErrorCode
from shared.testing.invariants import assert_run_invariants
from shared.testing.stack import Stack, wait_for

NOTICE_WITHIN_S = 5.0
SLACK_S = 1.5  # a loaded test machine; the real figure is in docs/guarantees.md


async def test_sockets_hear_of_a_redis_outage_and_resume_after_it(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    redis = EmbeddedRedis(appendonly=True, data_dir=data).start()
    stack = Stack(
        redis.url,
        tmp_path,
        CHATGW_OFFLINE_TOKEN_DELAY_MS="50",
        CHATGW_OFFLINE_MAX_TOKENS="120",
        CHATGW_RUN_LEASE_S="2",
        CHATGW_SWEEP_INTERVAL_S="0.5",
    )
    try:
        stack.start_worker()
        gateway = stack.start_gateway()
        async with ResilientClient([gateway.url], "dev:alice", max_backoff_s=0.5) as client:
            run_id = (await client.chat("outlive a Redis outage"))["run_id"]
            while sum(e["type"] == "token" for e in client.follow(run_id).events) < 3:
                await asyncio.sleep(0.02)
            async with await ChatgwConnection.open(gateway.url, "dev:bob") as bob:
                await bob.send({"type": "ping", "id": "before"})
                assert (await bob.reply())["type"] == "pong"

                redis.kill()
                killed = time.monotonic()
                code, _ = await asyncio.wait_for(asyncio.shield(bob.closed), NOTICE_WITHIN_S + SLACK_S)
                heard_after = time.monotonic() - killed
                notice = bob.replies.get_nowait()
            assert code == CloseCode.TRY_AGAIN_LATER
            assert notice["type"] == "error" and notice["code"] == ErrorCode.UNAVAILABLE, notice
            assert heard_after < NOTICE_WITHIN_S + SLACK_S
            while CloseCode.TRY_AGAIN_LATER not in client.close_codes:  # the resilient client hears it too
                assert time.monotonic() - killed < NOTICE_WITHIN_S + SLACK_S, client.close_codes
                await asyncio.sleep(0.02)

            # A socket opened during the outage is told at once, not left waiting on Redis.
            opened = time.monotonic()
            async with await ChatgwConnection.open(gateway.url, "dev:carol") as carol:
                code, _ = await asyncio.wait_for(asyncio.shield(carol.closed), 3)
                assert code == CloseCode.TRY_AGAIN_LATER
                assert carol.replies.get_nowait()["code"] == ErrorCode.UNAVAILABLE
            assert time.monotonic() - opened < 3
            assert gateway.readyz_status() == 503

            redis = EmbeddedRedis(port=redis.port, appendonly=True, data_dir=data).start()
            wait_for(lambda: gateway.readyz_status() == 200, 30, what="/readyz to recover")
            run = await client.wait(run_id, timeout=90)
            assert_run_invariants(run.events)
            assert run.terminal is not None and run.terminal["type"] == "run.completed", run.terminal
        assert all(p.alive() for p in [*stack.gateways, *stack.workers])
        print(f"notice {heard_after:.2f} s after Redis was killed")
    finally:
        stack.stop()
        redis.stop()
