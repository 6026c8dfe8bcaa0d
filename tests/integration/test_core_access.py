"""Ownership and authentication: who may resume/stop/continue what, and how sockets authenticate."""

from __future__ import annotations

import asyncio
import uuid

from shared.testing.stack import Stack
from tests.integration.test_core_support import (
    SLOW_MS,
    assert_well_formed,
    close_quietly,
    connect,
    normalize,
    open_raw,
    quiesce,
    start,
)


async def test_runs_and_conversations_are_private_to_their_user(bare_stack: Stack) -> None:
    start(bare_stack, CHATGW_OFFLINE_TOKEN_DELAY_MS=SLOW_MS)
    alice = await connect(bare_stack, "alice")
    alice2 = await connect(bare_stack, "alice")
    bob = await connect(bare_stack, "bob")
    try:
        accepted = await alice.chat("Alice's secret question")
        run_id, conv = accepted["run_id"], accepted["conversation_id"]
        head = await alice.follow(run_id, until_seq=3, timeout=10)

        # Bob, while the run is in flight: resume and stop say run_not_found, exactly as for a
        # run that does not exist; chat in her conversation says conversation_not_found, as for a
        # made-up conversation.
        made_up_run, made_up_conv = uuid.uuid4().hex, uuid.uuid4().hex
        replies = {}
        for label, rid in (("theirs", run_id), ("made_up", made_up_run)):
            await bob.send({"type": "resume", "run_id": rid, "after_seq": 0, "id": "r"})
            replies[f"resume_{label}"] = normalize(await bob.reply(), rid)
            await bob.send({"type": "stop", "run_id": rid, "id": "s"})
            replies[f"stop_{label}"] = normalize(await bob.reply(), rid)
        for label, cid in (("theirs", conv), ("made_up", made_up_conv)):
            replies[f"chat_{label}"] = normalize(
                await bob.chat("Let me in", conversation_id=cid, ref="c"), cid
            )
        for kind in ("resume", "stop"):
            assert replies[f"{kind}_theirs"] == replies[f"{kind}_made_up"]
            assert replies[f"{kind}_theirs"]["code"] == "run_not_found"
            assert replies[f"{kind}_theirs"]["run_id"] == "<ID>"
        assert replies["chat_theirs"] == replies["chat_made_up"]
        assert replies["chat_theirs"]["code"] == "conversation_not_found"
        await quiesce(bob)
        assert run_id not in bob.runs  # bob received no event of alice's run

        # A second socket of the same user can resume it, in full, and it was not stopped by bob.
        await alice2.resume(run_id, 0)
        other = await alice2.follow(run_id, timeout=10)
        mine = await alice.follow(run_id, head, timeout=10)
        assert_well_formed(other)
        assert other.events == mine.events
        assert mine.terminal is not None and mine.terminal["type"] == "run.completed"

        # After the end too: another user still gets run_not_found.
        await bob.resume(run_id, 0)
        assert (await bob.reply())["code"] == "run_not_found"
        # And the owner may continue her conversation.
        follow_up = await alice2.chat("Follow-up", conversation_id=conv)
        assert follow_up["type"] == "run.accepted" and follow_up["conversation_id"] == conv
        await alice2.follow(follow_up["run_id"], timeout=10)
    finally:
        await close_quietly(alice, alice2, bob)


async def test_auth_frame_instead_of_header(stack: Stack) -> None:
    async with await connect(stack, "bob", header_auth=False) as conn:
        accepted = await conn.chat("Hello via auth frame", ref="c-1")
        assert accepted["type"] == "run.accepted" and accepted["id"] == "c-1"
        t = await conn.follow(accepted["run_id"], timeout=10)
        assert t.terminal is not None and t.terminal["type"] == "run.completed"
        # A second auth on an authenticated socket is refused, but the socket stays usable.
        await conn.send({"type": "auth", "token": "dev:bob"})
        assert (await conn.reply())["code"] == "already_authenticated"
        await quiesce(conn)

    # bob owns the run: a header-authenticated socket of bob can resume it.
    async with await connect(stack, "bob") as again:
        await again.resume(accepted["run_id"], 0)
        assert (await again.follow(accepted["run_id"], timeout=10)).events == t.events


async def closed_with(conn: object, code: int) -> None:
    assert hasattr(conn, "closed")
    close_code, _ = await asyncio.wait_for(conn.closed, 10)
    assert close_code == code


async def test_bad_tokens_close_with_4001(stack: Stack) -> None:
    for token in ("bogus", "dev:", "dev:has space"):
        conn = await open_raw(stack, token)  # header
        await closed_with(conn, 4001)
        error = await conn.reply(1)
        assert error["type"] == "error" and error["code"] == "unauthorized"
        assert "bogus" not in error["message"]  # the token is never echoed
        await close_quietly(conn)

        conn = await open_raw(stack, token, header_auth=False)  # auth frame
        await closed_with(conn, 4001)
        await close_quietly(conn)

    malformed = await open_raw(stack)
    await malformed.send({"type": "auth", "token": ""})
    await closed_with(malformed, 4001)
    await close_quietly(malformed)


async def test_frames_before_auth_close_with_4001(stack: Stack) -> None:
    chat_first = await open_raw(stack)
    await chat_first.send({"type": "chat", "content": "let me in"})
    await closed_with(chat_first, 4001)
    assert (await chat_first.reply(1))["code"] == "unauthorized"
    await close_quietly(chat_first)

    ping_first = await open_raw(stack)
    await ping_first.send({"type": "ping"})
    await closed_with(ping_first, 4001)
    await close_quietly(ping_first)


async def test_no_auth_within_the_timeout_closes_with_4002(bare_stack: Stack) -> None:
    start(bare_stack, workers=0, CHATGW_AUTH_TIMEOUT_S="1")
    loop = asyncio.get_running_loop()
    began = loop.time()
    silent = await open_raw(bare_stack)
    await closed_with(silent, 4002)
    assert 0.8 <= loop.time() - began < 5
    await close_quietly(silent)

    # Authenticating in time keeps the socket open past the deadline.
    prompt = await open_raw(bare_stack, "dev:carol", header_auth=False)
    deadline = loop.time() + 1.5  # well past the 1 s auth deadline
    while loop.time() < deadline:
        await quiesce(prompt)
        await asyncio.sleep(0.25)
    assert not prompt.closed.done()
    await close_quietly(prompt)
