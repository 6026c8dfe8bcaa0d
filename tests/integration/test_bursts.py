"""Bursts of sockets while Redis is healthy (issue 9): never ``unavailable``. Admissions and chats
that outrun a pool wait for a connection (shared/redis_factory.py) instead of failing."""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from typing import Any

import pytest

from client import ChatgwConnection, RunTranscript
from shared.testing.stack import Stack

# Codes a chat may be refused with by design (docs/errors.md); `unavailable` is not one of them.
LIMIT_CODES = {"rate_limited", "too_many_runs", "too_many_sockets"}


@pytest.fixture(autouse=True)
def _enough_file_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _open_all(url: str, users: list[str]) -> tuple[list[ChatgwConnection | BaseException], float]:
    """Open one socket per user, all at once; how long opening them all took."""
    started = time.monotonic()
    opened = await asyncio.gather(
        *(ChatgwConnection.open(url, f"dev:{user}", open_timeout=60) for user in users),
        return_exceptions=True,
    )
    return opened, time.monotonic() - started


async def _close_all(connections: list[ChatgwConnection | BaseException]) -> None:
    await asyncio.gather(*(c.close() for c in connections if isinstance(c, ChatgwConnection)))


async def _ping(conn: ChatgwConnection, ref: str) -> dict[str, Any]:
    await conn.send({"type": "ping", "id": ref})
    return await conn.reply(timeout=30)


async def test_400_sockets_at_once_are_all_admitted(bare_stack: Stack) -> None:
    bare_stack.start_both()
    users = [f"crowd{i}" for i in range(400)]
    opened, took_s = await _open_all(bare_stack.gateways[0].url, users)
    try:
        failures = [repr(c) for c in opened if not isinstance(c, ChatgwConnection)]
        assert not failures, failures[:3]
        conns = [c for c in opened if isinstance(c, ChatgwConnection)]
        replies = await asyncio.gather(*(_ping(c, str(i)) for i, c in enumerate(conns)))
    finally:
        await _close_all(opened)
    print(f"400 sockets opened in {took_s:.2f} s")
    assert Counter(r["type"] for r in replies) == {"pong": 400}, [r for r in replies if r["type"] != "pong"][
        :3
    ]


async def _chat_and_wait(conn: ChatgwConnection, i: int) -> str:
    """``run.accepted`` followed to its end, or the error code the chat got."""
    await conn.send({"type": "chat", "content": f"burst {i}", "id": str(i)})
    reply = await conn.reply(timeout=60)
    if reply["type"] != "run.accepted":
        return str(reply.get("code", reply["type"]))
    transcript = RunTranscript(reply["run_id"])
    try:
        await conn.follow(reply["run_id"], transcript, timeout=120)
    except TimeoutError:
        return f"no terminal event: run {reply['run_id']}, seqs {transcript.seqs}, close {conn.ws.close_code}"
    return "run.accepted"


@pytest.mark.soak
@pytest.mark.timeout(300)
async def test_1000_sockets_at_once_each_chat(bare_stack: Stack) -> None:
    bare_stack.settings.update(
        CHATGW_OFFLINE_TOKEN_DELAY_MS="0", CHATGW_OFFLINE_MAX_TOKENS="5", CHATGW_WORKER_CONCURRENCY="1024"
    )
    bare_stack.start_both()
    users = [f"burst{i}" for i in range(1000)]
    opened, took_s = await _open_all(bare_stack.gateways[0].url, users)
    try:
        failures = [repr(c) for c in opened if not isinstance(c, ChatgwConnection)]
        assert not failures, failures[:3]
        conns = [c for c in opened if isinstance(c, ChatgwConnection)]
        started = time.monotonic()
        results = Counter(await asyncio.gather(*(_chat_and_wait(c, i) for i, c in enumerate(conns))))
        chats_s = time.monotonic() - started
    finally:
        await _close_all(opened)
    print(f"1000 sockets opened in {took_s:.2f} s; 1000 chats answered and run in {chats_s:.2f} s: {results}")
    assert "unavailable" not in results and set(results) <= {"run.accepted", *LIMIT_CODES}, results
    assert results["run.accepted"] == 1000  # every limit is per user, and each user sent one chat
