"""Per-user limits and ownership on two live gateway replicas sharing one Redis, with no worker (runs
stay queued, so they stay "in flight"): chat rate, concurrent runs, open sockets, follows per
socket, and another user's run or conversation looking exactly like a nonexistent one."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared.errors import CloseCode
from shared.keys import Keys
from shared.protocol import parse_server_frame
from shared.testing.stack import Gateway, Stack

MAX_RUNS = 3
MAX_SOCKETS = 2
MAX_FOLLOWS = 2
BURST = 5


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        redis_url,
        Path(tmp_path_factory.mktemp("limits")),
        CHATGW_RATE_LIMIT_PER_MINUTE="60",
        CHATGW_RATE_LIMIT_BURST=str(BURST),
        CHATGW_MAX_RUNS_PER_USER=str(MAX_RUNS),
        CHATGW_MAX_SOCKETS_PER_USER=str(MAX_SOCKETS),
        CHATGW_MAX_FOLLOWS_PER_SOCKET=str(MAX_FOLLOWS),
    )
    s.start_gateway()
    s.start_gateway()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def gateways(stack: Stack) -> tuple[Gateway, Gateway]:
    return stack.gateways[0], stack.gateways[1]


def user() -> str:
    return f"u{uuid.uuid4().hex[:8]}"  # a fresh user per test: limits are per user


def ws_connect(gateway: Gateway, name: str) -> Any:
    return connect(gateway.url, additional_headers={"Authorization": f"Bearer dev:{name}"})


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    parse_server_frame(raw)
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def request(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a frame and return its reply, skipping run events (a stop's run.stopped may come first)."""
    await ws.send(json.dumps(frame))
    while "seq" in (reply := await recv(ws)):
        pass
    return reply


async def chat(ws: ClientConnection, conversation_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "chat", "content": "hello"}
    if conversation_id:
        frame["conversation_id"] = conversation_id
    return await request(ws, frame)


async def ping_rtt(ws: ClientConnection) -> float:
    start = time.perf_counter()
    assert (await request(ws, {"type": "ping"}))["type"] == "pong"
    return time.perf_counter() - start


# ---------------------------------------------------------------- rate limit


async def test_chat_rate_limit_holds_across_replicas(gateways: tuple[Gateway, Gateway]) -> None:
    name = user()
    missing = uuid.uuid4().hex  # chats about an unknown conversation: refused, nothing written
    async with ws_connect(gateways[0], name) as a, ws_connect(gateways[1], name) as b:
        replies = [await chat(a if i % 2 else b, missing) for i in range(BURST + 3)]
    codes = [r["code"] for r in replies]
    assert codes[:BURST] == ["conversation_not_found"] * BURST
    assert set(codes[BURST:]) == {"rate_limited"}
    for reply in replies[BURST:]:
        assert 0 < reply["retry_after_ms"] <= 1000  # 60/min: one token a second


async def test_a_flooding_user_is_throttled_and_others_stay_responsive(
    gateways: tuple[Gateway, Gateway],
) -> None:
    gateway = gateways[0]
    flooder, victim = user(), user()
    missing = uuid.uuid4().hex
    async with ws_connect(gateway, victim) as bob:
        baseline = [await ping_rtt(bob) for _ in range(40)]
        async with ws_connect(gateway, flooder) as f1, ws_connect(gateway, flooder) as f2:
            codes: list[str] = []

            async def flood(ws: ClientConnection) -> None:
                frame = json.dumps({"type": "chat", "content": "spam", "conversation_id": missing})
                for _ in range(400):
                    await ws.send(frame)
                for _ in range(400):
                    codes.append((await recv(ws, timeout=30))["code"])

            flooding = asyncio.gather(flood(f1), flood(f2))
            during = [await ping_rtt(bob) for _ in range(40)]
            await flooding
    assert codes.count("rate_limited") >= 800 - BURST - 2  # a token or two may refill meanwhile
    base, busy = statistics.median(baseline), statistics.median(during)
    assert busy < max(10 * base, base + 0.05), f"ping median {busy * 1000:.1f} ms vs {base * 1000:.1f} ms"


# ---------------------------------------------------------------- concurrent runs


async def test_run_quota_holds_across_replicas(
    gateways: tuple[Gateway, Gateway], redis: Redis, stack: Stack
) -> None:
    name = user()
    async with ws_connect(gateways[0], name) as a, ws_connect(gateways[1], name) as b:
        accepted = [await chat(a), await chat(a), await chat(b)]
        assert [r["type"] for r in accepted] == ["run.accepted"] * MAX_RUNS
        assert (await chat(b))["code"] == "too_many_runs"
        other = user()
        async with ws_connect(gateways[1], other) as c:
            assert (await chat(c))["type"] == "run.accepted"  # per user
        # Ending one frees a slot.
        stopped = await request(a, {"type": "stop", "run_id": accepted[0]["run_id"]})
        assert stopped["status"] == "stopped"
        assert (await chat(b))["type"] == "run.accepted"
    assert await redis.scard(Keys(stack.prefix).user_runs(name)) == MAX_RUNS


# ---------------------------------------------------------------- open sockets


async def until_closed(ws: ClientConnection) -> tuple[int | None, list[dict[str, Any]]]:
    frames = []
    try:
        while True:
            frames.append(await recv(ws))
    except ConnectionClosed:
        return ws.close_code, frames


async def test_socket_cap_holds_across_replicas(gateways: tuple[Gateway, Gateway]) -> None:
    name = user()
    async with ws_connect(gateways[0], name) as a, ws_connect(gateways[1], name) as b:
        await ping_rtt(a)
        await ping_rtt(b)
        for gateway in gateways:
            async with ws_connect(gateway, name) as extra:
                code, frames = await until_closed(extra)
            assert code == CloseCode.TOO_MANY_SOCKETS
            assert [f["code"] for f in frames] == ["too_many_sockets"]
        async with connect(gateways[1].url) as extra:  # the auth-frame path counts too
            await extra.send(json.dumps({"type": "auth", "token": f"dev:{name}"}))
            code, _ = await until_closed(extra)
            assert code == CloseCode.TOO_MANY_SOCKETS
        await ping_rtt(a)  # the admitted sockets are untouched
        await ping_rtt(b)
    # Closing releases the slots.
    await asyncio.sleep(0.3)
    async with ws_connect(gateways[0], name) as a, ws_connect(gateways[1], name) as b:
        await ping_rtt(a)
        await ping_rtt(b)


# ---------------------------------------------------------------- follows per socket


async def test_follows_per_socket_are_capped(
    gateways: tuple[Gateway, Gateway], redis: Redis, stack: Stack
) -> None:
    name = user()
    async with ws_connect(gateways[0], name) as ws:
        first, second = await chat(ws), await chat(ws)
        refused = await chat(ws)
        assert refused["code"] == "too_many_follows"
        assert await redis.scard(Keys(stack.prefix).user_runs(name)) == 2  # nothing written for it
        # Re-following a run this socket already follows is allowed (it replaces the follow).
        await ws.send(json.dumps({"type": "resume", "run_id": first["run_id"], "after_seq": 0}))
        await ws.send(json.dumps({"type": "ping", "id": "after"}))
        assert await recv(ws) == {"type": "pong", "id": "after"}
        del second


# ---------------------------------------------------------------- ownership


def same_but_ids(a: dict[str, Any], b: dict[str, Any], ids: tuple[str, str]) -> bool:
    return json.dumps(a).replace(ids[0], "ID") == json.dumps(b).replace(ids[1], "ID")


async def test_another_users_run_looks_like_a_nonexistent_one(gateways: tuple[Gateway, Gateway]) -> None:
    alice, mallory = user(), user()
    async with ws_connect(gateways[0], alice) as a, ws_connect(gateways[1], mallory) as m:
        accepted = await chat(a)
        run_id, conversation_id = accepted["run_id"], accepted["conversation_id"]
        ghost = uuid.uuid4().hex
        for kind in ("resume", "stop"):
            theirs = await request(m, {"type": kind, "run_id": run_id, "id": "x"})
            nobody = await request(m, {"type": kind, "run_id": ghost, "id": "x"})
            assert theirs["code"] == "run_not_found"
            assert same_but_ids(theirs, nobody, (run_id, ghost)), (theirs, nobody)
        theirs = await chat(m, conversation_id)
        nobody = await chat(m, ghost)
        assert theirs["code"] == "conversation_not_found"
        assert same_but_ids(theirs, nobody, (conversation_id, ghost))
        # Alice's run was not touched by any of it.
        assert (await request(a, {"type": "stop", "run_id": run_id}))["status"] == "stopped"
