"""Priority tiers with real workers and Redis (docs/tiers.md): with every slot busy and a backlog of
free runs, a pro run takes the next free slot; aging lets a free run that waited long enough go ahead
of later pro runs; a token naming an unknown tier is refused at authentication.

Slots are freed by stopping the runs holding them, so no test waits for an answer to finish."""

from __future__ import annotations

import time
from collections.abc import Awaitable

from redis.asyncio import Redis

from shared.testing.stack import Stack
from tests.integration.test_core_support import close_quietly, connect, eventually, open_raw, start

LONG_RUNS: dict[str, str] = {
    "CHATGW_OFFLINE_TOKEN_DELAY_MS": "100",  # ~4 s per answer: runs hold their slots until stopped
    "CHATGW_RATE_LIMIT_BURST": "1000",
    "CHATGW_RATE_LIMIT_PER_MINUTE": "60000",
    "CHATGW_MAX_RUNS_PER_USER": "1000",
    "CHATGW_WORKER_SHUTDOWN_GRACE_S": "0",  # teardown hands the long runs back instead of waiting
}


async def status(redis: Redis, stack: Stack, run_id: str) -> str | None:
    found = await redis.hget(f"{stack.prefix}:run:{run_id}", "status")
    return None if found is None else str(found)


async def queued(redis: Redis, stack: Stack, tier: str) -> int:
    return int(await redis.llen(f"{stack.prefix}:dramatiq:chat-runs.{tier}"))


async def test_a_pro_run_takes_the_next_free_slot_ahead_of_a_free_backlog(
    bare_stack: Stack, redis: Redis
) -> None:
    bare_stack.settings.update(LONG_RUNS)
    start(bare_stack, CHATGW_WORKER_CONCURRENCY="2")
    crowd = await connect(bare_stack, "crowd")
    vip = await connect(bare_stack, "vip:pro")  # dev:<user>:<tier>
    try:
        blockers = [(await crowd.chat(f"blocker {i}"))["run_id"] for i in range(2)]
        for run_id in blockers:
            await crowd.follow(run_id, until_seq=1, timeout=10)  # both slots busy
        backlog = [(await crowd.chat(f"backlog question {i}"))["run_id"] for i in range(20)]
        await eventually(
            lambda: _equals(queued(redis, bare_stack, "free"), 20), what="all 20 backlog runs queued"
        )
        pro = (await vip.chat("a pro question"))["run_id"]
        await eventually(lambda: _equals(queued(redis, bare_stack, "pro"), 1), what="the pro run queued")

        freed = time.monotonic()
        await crowd.stop(blockers[0])
        first = await vip.follow(pro, until_seq=3, timeout=10)  # run.started, retrieval, a token
        assert [e["type"] for e in first.events][:3] == ["run.started", "retrieval", "token"]
        assert time.monotonic() - freed < 5.0  # generous: the real figure is in docs/benchmarks.md
        assert [await status(redis, bare_stack, r) for r in backlog] == ["queued"] * 20

        # The free tier is not stuck behind it: the next slot goes to the oldest backlog run.
        await crowd.stop(blockers[1])
        await eventually(lambda: _equals(status(redis, bare_stack, backlog[0]), "running"), what="backlog[0]")
        assert [await status(redis, bare_stack, r) for r in backlog[1:]] == ["queued"] * 19
    finally:
        await close_quietly(crowd, vip)


async def test_aging_lets_a_free_run_that_waited_long_enough_go_first(
    bare_stack: Stack, redis: Redis
) -> None:
    bare_stack.settings.update(LONG_RUNS)
    start(bare_stack, CHATGW_WORKER_CONCURRENCY="1", CHATGW_PRIORITY_AGING_S="1")
    free = await connect(bare_stack, "crowd")
    pro = await connect(bare_stack, "vip:pro")
    try:
        blocker = (await free.chat("blocker"))["run_id"]
        await free.follow(blocker, until_seq=1, timeout=10)
        aged = (await free.chat("a free question that will wait"))["run_id"]
        queued_at = time.monotonic()
        await eventually(lambda: _equals(queued(redis, bare_stack, "free"), 1), what="the free run queued")
        # The aging itself: a free run counts as queued 1 s later than it was.
        await eventually(lambda: time.monotonic() - queued_at > 1.5, what="the free run to age")
        recent = (await free.chat("a free question queued just before the pro ones"))["run_id"]
        later = [(await pro.chat(f"pro question {i}"))["run_id"] for i in range(2)]
        await eventually(lambda: _equals(queued(redis, bare_stack, "pro"), 2), what="the pro runs queued")

        order = []
        running, waiting = blocker, [aged, recent, *later]
        while waiting:
            owner = pro if running in later else free
            await owner.stop(running)  # frees the only slot
            running = await _next_running(redis, bare_stack, waiting)
            order.append(running)
            waiting.remove(running)
        # Not first come, first served (recent would precede the pro runs), nor strict priority (the
        # aged run would come after them): the aged free run, the pro runs, then the recent free run.
        assert order == [aged, *later, recent]
    finally:
        await close_quietly(free, pro)


async def test_a_token_with_an_unknown_tier_is_refused(bare_stack: Stack) -> None:
    start(bare_stack, workers=0)
    conn = await open_raw(bare_stack, "dev:alice:gold")
    try:
        reply = await conn.reply(5)
        assert reply["type"] == "error" and reply["code"] == "unauthorized"
        assert "unknown tier" in reply["message"]
        assert (await conn.closed)[0] == 4001
    finally:
        await close_quietly(conn)
    ok = await open_raw(bare_stack, "dev:alice:pro")
    try:
        await ok.send({"type": "ping", "id": "p"})
        assert await ok.reply(5) == {"type": "pong", "id": "p"}
    finally:
        await close_quietly(ok)


async def _equals(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _next_running(redis: Redis, stack: Stack, candidates: list[str]) -> str:
    found: list[str] = []

    async def one_running() -> bool:
        found[:] = [r for r in candidates if await status(redis, stack, r) == "running"]
        return bool(found)

    await eventually(one_running, what="the next run to start")
    assert len(found) == 1, found
    return found[0]
