"""Double texting: a chat on a conversation whose run is still in flight, per CHATGW_ON_BUSY."""

from __future__ import annotations

from pathlib import Path

from client import ChatgwConnection
from shared.testing.invariants import assert_run_invariants
from shared.testing.stack import Stack


def _slow_stack(redis_url: str, tmp_path: Path, policy: str) -> Stack:
    stack = Stack(redis_url, tmp_path, CHATGW_OFFLINE_TOKEN_DELAY_MS="60", CHATGW_ON_BUSY=policy)
    stack.start_worker()
    stack.start_gateway()
    return stack


async def test_interrupt_stops_the_run_in_flight_and_keeps_its_partial_answer(
    redis_url: str, tmp_path: Path
) -> None:
    stack = _slow_stack(redis_url, tmp_path, "interrupt")
    try:
        async with await ChatgwConnection.open(stack.gateways[0].url, "dev:alice") as conn:
            first = await conn.chat("tell me everything about streaming")
            seen = await conn.follow(first["run_id"], until_seq=5)
            second = await conn.chat("actually, how does stop work?", first["conversation_id"])
            assert second["type"] == "run.accepted" and second.get("queued", False) is False
            stopped = await conn.follow(first["run_id"], seen)
            done = await conn.follow(second["run_id"])
        assert stopped.terminal is not None and stopped.terminal["type"] == "run.stopped"
        assert stopped.terminal["content"] == stopped.text and stopped.text
        assert_run_invariants(done.events)
        assert done.terminal is not None and done.terminal["type"] == "run.completed"
        # The interrupted answer is remembered, marked as interrupted.
        assert "interrupted" in done.terminal["content"]
    finally:
        stack.stop()


async def test_enqueue_runs_the_second_chat_after_the_first(redis_url: str, tmp_path: Path) -> None:
    stack = _slow_stack(redis_url, tmp_path, "enqueue")
    try:
        async with await ChatgwConnection.open(stack.gateways[0].url, "dev:alice") as conn:
            first = await conn.chat("first question")
            second = await conn.chat("second question", first["conversation_id"])
            assert second["queued"] is True
            one = await conn.follow(first["run_id"])
            two = await conn.follow(second["run_id"])
        assert one.terminal is not None and one.terminal["type"] == "run.completed"
        assert two.terminal is not None and two.terminal["type"] == "run.completed"
        assert two.events[0]["ts"] >= one.terminal["ts"], "the queued run started before the first ended"
        assert "first question" in two.terminal["content"], "the second turn sees the first"
    finally:
        stack.stop()


async def test_reject_is_the_default(stack: Stack) -> None:
    async with await ChatgwConnection.open(stack.gateways[0].url, "dev:alice") as conn:
        first = await conn.chat("first")
        busy = await conn.chat("second", first["conversation_id"])
        assert busy["type"] == "error" and busy["code"] == "conversation_busy"
        await conn.follow(first["run_id"])


async def test_a_queued_follow_up_can_be_stopped_before_it_runs(redis_url: str, tmp_path: Path) -> None:
    stack = _slow_stack(redis_url, tmp_path, "enqueue")
    try:
        async with await ChatgwConnection.open(stack.gateways[0].url, "dev:alice") as conn:
            first = await conn.chat("first question")
            second = await conn.chat("second question", first["conversation_id"])
            state = await conn.stop(second["run_id"])
            assert state["status"] == "stopped"
            two = await conn.follow(second["run_id"])
            one = await conn.follow(first["run_id"])
            third = await conn.chat("third question", first["conversation_id"])
            assert third["type"] == "run.accepted" and third.get("queued", False) is False
            await conn.follow(third["run_id"])
        assert [e["type"] for e in two.events] == ["run.stopped"]
        assert one.terminal is not None and one.terminal["type"] == "run.completed"
    finally:
        stack.stop()
