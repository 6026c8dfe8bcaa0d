"""Stop: mid-run, while queued (no worker yet), after the end, unknown runs; conversation turns."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from shared.testing.stack import Stack
from tests.integration.test_core_support import (
    SLOW_MS,
    assert_well_formed,
    connect,
    eventually,
    no_more_events,
    quiesce,
    replay,
    start,
)


async def test_stop_mid_run_keeps_the_partial_answer(bare_stack: Stack) -> None:
    start(bare_stack, CHATGW_OFFLINE_TOKEN_DELAY_MS=SLOW_MS)
    async with await connect(bare_stack) as conn:
        accepted = await conn.chat("Stop me halfway")
        run_id = accepted["run_id"]
        live = await conn.follow(run_id, until_seq=6, timeout=10)
        await conn.send({"type": "stop", "run_id": run_id, "id": "s-1"})
        assert await conn.reply() == {
            "type": "run.state",
            "id": "s-1",
            "run_id": run_id,
            "status": "stopping",
        }
        live = await conn.follow(run_id, live, timeout=10)
        assert_well_formed(live)
        stopped = live.terminal
        assert stopped is not None and stopped["type"] == "run.stopped"
        assert len(live.tokens) >= 4
        assert stopped["content"] == live.text
        await quiesce(conn)
        assert no_more_events(conn, run_id)

        # The stored log agrees: same events, and the stop is the last one.
        stored = await replay(conn, run_id, 0)
        assert stored.events == live.events
        assert stored.events[-1]["type"] == "run.stopped"

        # The offline model is deterministic: the same question, unstopped, gives a longer answer
        # of which the stopped content is a proper prefix.
        whole = await conn.chat("Stop me halfway")
        complete = await conn.follow(whole["run_id"], timeout=10)
        assert complete.terminal is not None and complete.terminal["type"] == "run.completed"
        assert complete.terminal["content"].startswith(stopped["content"])
        assert len(complete.tokens) > len(live.tokens)

        # Stop is idempotent: it now reports the terminal status.
        assert (await conn.stop(run_id))["status"] == "stopped"


async def test_stop_of_a_queued_run_is_never_executed(bare_stack: Stack, redis: Redis) -> None:
    start(bare_stack, workers=0)  # a gateway but no worker: the run stays queued
    prefix = bare_stack.prefix
    async with await connect(bare_stack) as conn:
        accepted = await conn.chat("Nobody will answer this")
        run_id = accepted["run_id"]
        meta = f"{prefix}:run:{run_id}"
        queue = f"{prefix}:dramatiq:chat-runs.free"  # the default tier's queue
        assert await redis.hget(meta, "status") == "queued"
        attempt_before = await redis.hget(meta, "attempt")

        async def enqueued() -> bool:
            return bool(await redis.llen(queue) == 1)

        await eventually(enqueued, timeout=5, what="the run's message in the Dramatiq queue")

        state = await conn.stop(run_id)
        assert state == {"type": "run.state", "run_id": run_id, "status": "stopped"}
        t = await conn.follow(run_id, timeout=5)
        assert [(e["seq"], e["type"], e["content"]) for e in t.events] == [(1, "run.stopped", "")]

        # Now a worker comes: it takes the message and skips the run.
        worker = bare_stack.start_worker()

        async def consumed() -> bool:
            # Dramatiq keeps a message in `<queue>.msgs` until it is acked (or dead-lettered).
            return bool(await redis.llen(queue) == 0 and await redis.hlen(f"{queue}.msgs") == 0)

        await eventually(consumed, what="the worker to take the queued message")
        assert worker.alive()
        # Never claimed: the attempt counter did not move and no worker is recorded on the run.
        assert await redis.hget(meta, "attempt") == attempt_before
        assert await redis.hmget(meta, ["worker", "claimed_at"]) == [None, None]
        assert await redis.hget(meta, "status") == "stopped"
        assert await redis.xlen(f"{meta}:log") == 1
        again = await replay(conn, run_id, 0)
        assert [e["type"] for e in again.events] == ["run.stopped"]
        assert (await conn.stop(run_id))["status"] == "stopped"

        # The conversation is free again: a follow-up runs on the new worker.
        follow_up = await conn.chat("Now answer", conversation_id=accepted["conversation_id"])
        assert follow_up["type"] == "run.accepted"
        t2 = await conn.follow(follow_up["run_id"], timeout=10)
        assert t2.terminal is not None and t2.terminal["type"] == "run.completed"


async def test_run_queued_before_any_worker_boots_is_executed(bare_stack: Stack) -> None:
    # Regression: workers used to take messages before their runtime existed (fixed in 91bbd1f).
    start(bare_stack, workers=0)
    async with await connect(bare_stack) as conn:
        accepted = await conn.chat("Who will answer this?")
        bare_stack.start_worker()
        t = await conn.follow(accepted["run_id"], timeout=8)
        assert t.terminal is not None and t.terminal["type"] == "run.completed"


async def test_stop_of_finished_and_unknown_runs(stack: Stack) -> None:
    async with await connect(stack) as conn:
        accepted = await conn.chat("Finish first")
        run_id = accepted["run_id"]
        t = await conn.follow(run_id, timeout=10)
        assert t.terminal is not None and t.terminal["type"] == "run.completed"

        await conn.send({"type": "stop", "run_id": run_id, "id": "s-2"})
        assert await conn.reply() == {
            "type": "run.state",
            "id": "s-2",
            "run_id": run_id,
            "status": "completed",
        }
        # Harmless: nothing was appended, the replay still ends with run.completed.
        again = await replay(conn, run_id, 0)
        assert again.events == t.events

        unknown = uuid.uuid4().hex
        await conn.send({"type": "stop", "run_id": unknown, "id": "s-3"})
        error = await conn.reply()
        assert error["type"] == "error" and error["code"] == "run_not_found"
        assert error["id"] == "s-3" and error["run_id"] == unknown


async def test_follow_up_turn_and_busy_conversation(bare_stack: Stack) -> None:
    start(bare_stack, CHATGW_OFFLINE_TOKEN_DELAY_MS=SLOW_MS)
    async with await connect(bare_stack) as conn:
        first = await conn.chat("First turn")
        conv = first["conversation_id"]
        head = await conn.follow(first["run_id"], until_seq=3, timeout=10)
        assert head.terminal is None  # still in flight

        busy = await conn.chat("Too early", conversation_id=conv, ref="b-1")
        assert busy["type"] == "error" and busy["code"] == "conversation_busy" and busy["id"] == "b-1"

        t1 = await conn.follow(first["run_id"], head, timeout=10)
        assert t1.terminal is not None and t1.terminal["type"] == "run.completed"

        second = await conn.chat("Second turn", conversation_id=conv, ref="c-2")
        assert second["type"] == "run.accepted" and second["id"] == "c-2"
        assert second["conversation_id"] == conv and second["run_id"] != first["run_id"]
        t2 = await conn.follow(second["run_id"], timeout=10)
        assert_well_formed(t2)
        assert t2.terminal is not None and t2.terminal["type"] == "run.completed"
        assert {e["conversation_id"] for e in t2.events} == {conv}
