"""Failures that must be survived: each test really kills, pauses or cuts something."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from pathlib import Path

import orjson
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from client import ResilientClient
from shared.keys import Keys
from shared.runstore import RunStore
from shared.testing.invariants import assert_run_invariants
from shared.testing.stack import Stack, wait_for
from tests.fakes.openai_server import FakeOpenAIServer

FAST_LEASES = {"CHATGW_RUN_LEASE_S": "1.5", "CHATGW_SWEEP_INTERVAL_S": "0.3"}


async def _wait_tokens(client: ResilientClient, run_id: str, count: int, timeout: float = 15.0) -> None:
    async def enough() -> None:
        while sum(e["type"] == "token" for e in client.follow(run_id).events) < count:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(enough(), timeout)


async def test_worker_sigkill_mid_run_is_retried_visibly(redis_url: str, tmp_path: Path) -> None:
    stack = Stack(redis_url, tmp_path, CHATGW_OFFLINE_TOKEN_DELAY_MS="40", **FAST_LEASES)
    try:
        doomed = stack.start_worker()
        gateway = stack.start_gateway()
        async with ResilientClient([gateway.url], "dev:alice") as client:
            run_id = (await client.chat("tell me about failover"))["run_id"]
            await _wait_tokens(client, run_id, 3)
            doomed.kill()
            stack.start_worker()
            run = await client.wait(run_id, timeout=30)
        types = [e["type"] for e in run.events]
        assert_run_invariants(run.events)
        assert run.terminal is not None and run.terminal["type"] == "run.completed"
        retry = types.index("run.retrying")
        assert run.events[retry]["attempt"] == 2
        assert types[retry + 1] == "run.started" and run.events[retry + 1]["attempt"] == 2
        assert "token" in types[:retry], "the first attempt had streamed before it died"
    finally:
        stack.stop()


async def test_worker_lost_too_often_fails_the_run(redis_url: str, tmp_path: Path) -> None:
    stack = Stack(
        redis_url, tmp_path, CHATGW_OFFLINE_TOKEN_DELAY_MS="40", CHATGW_MAX_ATTEMPTS="2", **FAST_LEASES
    )
    try:
        gateway = stack.start_gateway()
        async with ResilientClient([gateway.url], "dev:alice") as client:
            run_id = (await client.chat("doomed"))["run_id"]
            for attempt in (1, 2):
                worker = stack.start_worker()
                await asyncio.wait_for(_started(client, run_id, attempt), 20)
                worker.kill()
            sweeper = stack.start_worker()  # only sweeps: the run is out of attempts
            run = await client.wait(run_id, timeout=30)
            assert sweeper.alive()
        assert_run_invariants(run.events)
        assert run.terminal is not None and run.terminal["type"] == "run.failed"
        assert run.terminal["error"]["code"] == "worker_lost"
    finally:
        stack.stop()


async def _started(client: ResilientClient, run_id: str, attempt: int) -> None:
    while not any(
        e["type"] == "token" and _attempt_of(client.follow(run_id).events, i) == attempt
        for i, e in enumerate(client.follow(run_id).events)
    ):
        await asyncio.sleep(0.02)


def _attempt_of(events: list[dict[str, object]], index: int) -> int:
    attempt = 1
    for event in events[: index + 1]:
        if event["type"] == "run.started":
            attempt = int(event["attempt"])  # type: ignore[call-overload]
    return attempt


async def test_paused_worker_is_fenced_out(redis_url: str, tmp_path: Path) -> None:
    stack = Stack(redis_url, tmp_path, CHATGW_OFFLINE_TOKEN_DELAY_MS="40", **FAST_LEASES)
    try:
        paused = stack.start_worker()
        gateway = stack.start_gateway()
        async with ResilientClient([gateway.url], "dev:alice") as client:
            run_id = (await client.chat("pause me"))["run_id"]
            await _wait_tokens(client, run_id, 3)
            paused.signal(signal.SIGSTOP)
            stack.start_worker()
            await asyncio.wait_for(_started(client, run_id, 2), 20)
            paused.signal(signal.SIGCONT)  # wakes up believing it still runs attempt 1
            run = await client.wait(run_id, timeout=30)
            # Give the resumed worker time to try its next appends, then check the log itself.
            await asyncio.sleep(0.5)
        assert_run_invariants(run.events)
        retry = [e["type"] for e in run.events].index("run.retrying")
        assert all(_attempt_of(run.events, i) == 2 for i in range(retry + 1, len(run.events)))
        async with Redis.from_url(redis_url, decode_responses=True) as redis:
            log_len = await redis.xlen(f"{stack.prefix}:run:{run_id}:log")
        assert log_len == len(run.events), "a stale attempt wrote to the log"
        wait_for(lambda: "stale_attempt" in paused.output() or "lost its lease" in paused.output(), 10)
    finally:
        stack.stop()


async def test_gateway_sigkill_clients_resume_on_the_other(redis_url: str, tmp_path: Path) -> None:
    stack = Stack(redis_url, tmp_path, CHATGW_OFFLINE_TOKEN_DELAY_MS="20")
    try:
        stack.start_worker()
        first = stack.start_gateway()
        second = stack.start_gateway()
        clients = [ResilientClient([first.url, second.url], f"dev:user{i}") for i in range(6)]
        for client in clients:
            await client.start()
        run_ids = [(await c.chat(f"question {i} about resume"))["run_id"] for i, c in enumerate(clients)]
        await asyncio.gather(*(_wait_tokens(c, r, 2) for c, r in zip(clients, run_ids, strict=True)))
        first.kill()
        runs = await asyncio.gather(*(c.wait(r, timeout=30) for c, r in zip(clients, run_ids, strict=True)))
        for client, run in zip(clients, runs, strict=True):
            assert_run_invariants(run.events)
            assert run.terminal is not None and run.terminal["type"] == "run.completed"
            assert client.reconnects >= 1
            await client.close()
    finally:
        stack.stop()


async def test_pubsub_connection_drop_is_filled_from_the_log(stack: Stack, redis_url: str) -> None:
    gateway = stack.gateways[0]
    async with ResilientClient([gateway.url], "dev:alice") as client:
        run_ids = [(await client.chat(f"pubsub drop {i}"))["run_id"] for i in range(3)]
        await asyncio.gather(*(_wait_tokens(client, r, 1) for r in run_ids))
        async with Redis.from_url(redis_url, decode_responses=True) as redis:
            killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        runs = await asyncio.gather(*(client.wait(r, timeout=30) for r in run_ids))
        assert client.reconnects == 0, "the socket itself must survive a pub/sub drop"
    for run in runs:
        assert_run_invariants(run.events)
        assert run.terminal is not None and run.terminal["type"] == "run.completed"


async def test_gateway_sigterm_drains_with_1012(redis_url: str, tmp_path: Path) -> None:
    stack = Stack(redis_url, tmp_path, CHATGW_OFFLINE_TOKEN_DELAY_MS="30")
    try:
        stack.start_worker()
        first = stack.start_gateway()
        second = stack.start_gateway()
        async with ResilientClient([first.url, second.url], "dev:alice") as client:
            run_id = (await client.chat("drain me"))["run_id"]
            await _wait_tokens(client, run_id, 2)
            first.signal(signal.SIGTERM)
            run = await client.wait(run_id, timeout=30)
            wait_for(lambda: not first.alive(), 15, what="gateway exit")
            assert 1012 in client.close_codes
        assert_run_invariants(run.events)
        assert run.terminal is not None and run.terminal["type"] == "run.completed"
    finally:
        stack.stop()


async def test_worker_sigterm_finishes_or_hands_back(redis_url: str, tmp_path: Path) -> None:
    stack = Stack(
        redis_url,
        tmp_path,
        CHATGW_OFFLINE_TOKEN_DELAY_MS="60",
        CHATGW_WORKER_SHUTDOWN_GRACE_S="0.5",
        **FAST_LEASES,
    )
    try:
        leaving = stack.start_worker()
        gateway = stack.start_gateway()
        async with ResilientClient([gateway.url], "dev:alice") as client:
            run_id = (await client.chat("a long answer please"))["run_id"]
            await _wait_tokens(client, run_id, 2)
            leaving.signal(signal.SIGTERM)
            wait_for(lambda: not leaving.alive(), 20, what="worker exit")
            stack.start_worker()
            run = await client.wait(run_id, timeout=30)
        assert_run_invariants(run.events)
        retrying = [e for e in run.events if e["type"] == "run.retrying"]
        assert len(retrying) == 1 and retrying[0]["reason"] == "worker_shutdown"
        assert run.terminal is not None and run.terminal["type"] == "run.completed"
    finally:
        stack.stop()


async def test_slow_client_is_disconnected_and_resumes(redis_url: str, tmp_path: Path) -> None:
    # 3 runs x 1500 tokens of ~1 KiB: more than the kernel's socket buffers and the queue hold.
    tokens = 1500
    with FakeOpenAIServer("--delay", "0", "--tokens", str(tokens), "--token-pad", "1000") as llm:
        stack = Stack(
            redis_url,
            tmp_path,
            CHATGW_LLM="openai",
            CHATGW_LLM_BASE_URL=llm.base_url,
            CHATGW_LLM_MODEL="fake",
            CHATGW_LLM_API_KEY="test",
            CHATGW_LLM_MAX_TOKENS=str(tokens + 10),
            CHATGW_MAX_RUN_TOKENS=str(tokens + 10),
            CHATGW_OUTBOUND_QUEUE_SIZE="64",
        )
        try:
            stack.start_worker()
            gateway = stack.start_gateway()
            # A client with a tiny receive buffer that reads nothing for a while.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
            sock.connect(("127.0.0.1", gateway.port))
            slow = await connect(
                gateway.url, sock=sock, additional_headers={"Authorization": "Bearer dev:alice"}, max_queue=1
            )
            for i in range(3):
                await slow.send(orjson.dumps({"type": "chat", "content": f"flood {i}"}).decode())
            wait_for(lambda: "slow consumer" in gateway.output(), 60, what="the gateway giving up on us")
            run_ids: list[str] = []
            seen: dict[str, int] = {}
            with contextlib.suppress(ConnectionClosed):
                while True:
                    frame = orjson.loads(await asyncio.wait_for(slow.recv(), 30))
                    if frame["type"] == "run.accepted":
                        run_ids.append(frame["run_id"])
                    elif "seq" in frame:
                        assert frame["seq"] == seen.get(frame["run_id"], 0) + 1
                        seen[frame["run_id"]] = frame["seq"]
            # 4008 when the close frame gets through; a client that reads nothing for seconds cannot
            # receive it, and the gateway aborts the connection instead (1006). Either way: resume.
            assert slow.close_code in (4008, 1006), slow.close_code
            assert len(run_ids) == 3
            async with ResilientClient([gateway.url], "dev:alice") as client:
                runs = [client.follow(run_id, after_seq=seen.get(run_id, 0)) for run_id in run_ids]
                for run in runs:
                    await client.wait(run.run_id, timeout=90)
            for run in runs:
                assert run.events[0]["seq"] == seen.get(run.run_id, 0) + 1
                assert run.terminal is not None and run.terminal["type"] == "run.completed"
                assert len(run.terminal["content"].split()) == tokens
        finally:
            stack.stop()


async def test_a_run_whose_gateway_died_before_enqueueing_it_still_runs(
    redis_url: str, tmp_path: Path, redis: Redis
) -> None:
    stack = Stack(redis_url, tmp_path, **FAST_LEASES)
    try:
        gateway = stack.start_gateway()
        # What a gateway leaves behind when it dies between creating a run and enqueueing it.
        store = RunStore(redis, Keys(stack.prefix), retention_s=60, conversation_ttl_s=600)
        await store.create_run(
            run_id="orphan", user="alice", conversation_id="c-orphan", new_conversation=True,
            content="was I forgotten?", unclaimed_grace_s=2.0,
        )  # fmt: skip
        stack.start_worker()
        async with ResilientClient([gateway.url], "dev:alice") as client:
            run = await client.wait(client.follow("orphan").run_id, timeout=30)
        assert_run_invariants(run.events)
        assert run.terminal is not None and run.terminal["type"] == "run.completed"
    finally:
        stack.stop()
