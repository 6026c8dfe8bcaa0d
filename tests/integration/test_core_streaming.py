"""Core streaming: event order and numbering, resume (live and finished), overlap, disconnects."""

from __future__ import annotations

import asyncio
import itertools

from redis.asyncio import Redis

from client import RunTranscript
from shared.testing.stack import Stack
from tests.integration.test_core_support import (
    SLOW_MS,
    assert_well_formed,
    close_quietly,
    connect,
    eventually,
    no_more_events,
    quiesce,
    replay,
    start,
)


async def test_chat_streams_numbered_events_to_one_terminal(stack: Stack, redis: Redis) -> None:
    async with await connect(stack) as conn:
        accepted = await conn.chat("What is chatgw?", ref="c-1")
        assert accepted["type"] == "run.accepted" and accepted["id"] == "c-1"
        run_id, conv_id = accepted["run_id"], accepted["conversation_id"]
        t = await conn.follow(run_id, timeout=10)

        # run.accepted is the very first frame on the wire, before any event of the run.
        assert conn.wire[0] == accepted
        assert_well_formed(t)
        types = [e["type"] for e in t.events]
        assert types[0] == "run.started" and t.events[0]["attempt"] == 1
        assert types[1] == "retrieval" and t.events[1]["sources"] == []
        assert types[-1] == "run.completed"
        assert set(types[2:-1]) == {"token"} and len(types) - 3 >= 10
        assert all(e["run_id"] == run_id and e["conversation_id"] == conv_id for e in t.events)
        done = t.events[-1]
        assert done["content"] == t.text and t.text.strip()
        assert done.get("truncated", False) is False  # optional on the wire, default false
        # The offline model's tokens are words; a token event may carry several of them.
        assert done["usage"]["completion_tokens"] == len(t.text.split())
        ts = [e["ts"] for e in t.events]
        assert all(isinstance(x, float) for x in ts)
        assert ts == sorted(ts)

        # Nothing follows the terminal event, on the wire or in the log.
        await quiesce(conn)
        assert no_more_events(conn, run_id)
        assert await redis.xlen(f"{stack.prefix}:run:{run_id}:log") == len(t.events)
        assert await redis.hget(f"{stack.prefix}:run:{run_id}", "status") == "completed"


async def test_offline_max_tokens_truncates(bare_stack: Stack) -> None:
    start(bare_stack, CHATGW_OFFLINE_MAX_TOKENS="4")
    async with await connect(bare_stack) as conn:
        accepted = await conn.chat("How long can an answer be?")
        t = await conn.follow(accepted["run_id"], timeout=10)
        assert_well_formed(t)
        assert len(t.text.split()) == 4  # four of the model's tokens (words), in however many events
        assert t.terminal is not None and t.terminal["type"] == "run.completed"
        assert t.terminal["truncated"] is True and t.terminal["content"] == t.text


async def test_resume_after_disconnect_mid_run(bare_stack: Stack, redis: Redis) -> None:
    start(bare_stack, CHATGW_OFFLINE_TOKEN_DELAY_MS=SLOW_MS)
    first = await connect(bare_stack)
    accepted = await first.chat("Tell me about resume")
    run_id = accepted["run_id"]
    k = 5
    head = await first.follow(run_id, until_seq=k, timeout=10)
    assert head.seqs == [1, 2, 3, 4, 5]
    await first.close()

    # The run is still going: what follows comes partly from the log, partly live.
    assert await redis.hget(f"{bare_stack.prefix}:run:{run_id}", "status") == "running"
    async with await connect(bare_stack) as second:
        await second.resume(run_id, k)
        tail = await second.follow(run_id, timeout=10)
        assert tail.events[0]["seq"] == k + 1
        assert_well_formed(tail, first_seq=k + 1)
        whole = RunTranscript(run_id, head.events + tail.events)
        assert_well_formed(whole)
        assert whole.terminal is not None and whole.terminal["type"] == "run.completed"
        assert whole.terminal["content"] == whole.text
        await quiesce(second)
        assert no_more_events(second, run_id)


async def test_resume_of_finished_run_replays(stack: Stack) -> None:
    async with await connect(stack) as conn:
        accepted = await conn.chat("Replay me")
        run_id = accepted["run_id"]
        live = await conn.follow(run_id, timeout=10)
        n = live.last_seq

        # From the start, on the same socket.
        full = await replay(conn, run_id, 0)
        assert full.events == live.events

        # From the middle, on another socket.
        async with await connect(stack) as other:
            middle = n // 2
            part = await replay(other, run_id, middle)
            assert part.events == live.events[middle:]
            # At the terminal event: nothing more (and then a later resume is still served).
            await other.resume(run_id, n)
            await quiesce(other)
            assert no_more_events(other, run_id)
            last = await replay(other, run_id, n - 1)
            assert last.events == [live.events[-1]]


async def test_two_runs_stream_interleaved_on_one_socket(bare_stack: Stack) -> None:
    start(bare_stack, CHATGW_OFFLINE_TOKEN_DELAY_MS=SLOW_MS)
    async with await connect(bare_stack) as conn:
        a = await conn.chat("First question about Redis")
        b = await conn.chat("Second question about Dramatiq")
        assert a["conversation_id"] != b["conversation_id"]
        ta, tb = await asyncio.gather(
            conn.follow(a["run_id"], timeout=10), conn.follow(b["run_id"], timeout=10)
        )
        for t in (ta, tb):
            assert_well_formed(t)
            assert t.terminal is not None and t.terminal["type"] == "run.completed"
            assert t.terminal["content"] == t.text
        # Nothing crossed over: each transcript holds only its own run's events (the offline model
        # may give both questions the same answer when no document matches).
        assert {e["run_id"] for e in ta.events} == {a["run_id"]}
        assert {e["run_id"] for e in tb.events} == {b["run_id"]}
        order = [f["run_id"] for f in conn.wire if "seq" in f]
        switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
        assert switches >= 4, f"runs did not overlap on the wire: {order}"


async def test_closing_the_socket_does_not_cancel_the_run(bare_stack: Stack, redis: Redis) -> None:
    start(bare_stack, CHATGW_OFFLINE_TOKEN_DELAY_MS="10")
    conn = await connect(bare_stack)
    accepted = await conn.chat("Keep going without me")
    run_id = accepted["run_id"]
    await conn.close()
    meta = f"{bare_stack.prefix}:run:{run_id}"

    async def finished() -> bool:
        return await redis.hget(meta, "status") in {"completed", "stopped", "failed"}

    await eventually(finished, what="run to end")
    async with await connect(bare_stack) as again:
        t = await replay(again, run_id, 0)
        assert_well_formed(t)
        assert t.terminal is not None and t.terminal["type"] == "run.completed"
        assert t.terminal["content"] == t.text and len(t.tokens) >= 10
    await close_quietly(conn)
