"""Redis faults (issue 9): a restart, an outage longer than a worker's outage budget, a failed claim.

Each test runs its own redis-server with AOF on a free port (shared.testing.own_redis), never the
machine's Redis: it stops, restarts and starves that server.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.asyncio import Redis

from client import ChatgwConnection, FollowedRun, ResilientClient
from shared.keys import Keys
from shared.runstore import Claim, RunStore
from shared.testing.invariants import assert_run_invariants, run_violations
from shared.testing.own_redis import OwnRedis
from shared.testing.stack import Stack, wait_for

# Per-user limits are not what these tests are about.
NO_USER_LIMITS = {
    "CHATGW_RATE_LIMIT_PER_MINUTE": "100000",
    "CHATGW_RATE_LIMIT_BURST": "10000",
    "CHATGW_MAX_RUNS_PER_USER": "1000",
}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    data = tmp_path / "redis"
    data.mkdir()
    server = OwnRedis(data)
    try:
        yield server
    finally:
        server.close()


async def _chat_and_follow(url: str, user: str, content: str) -> dict[str, Any]:
    """One socket: admission, one chat, its run to the end. Says how far it got and what it saw."""
    outcome: dict[str, Any] = {"user": user}
    try:
        conn = await ChatgwConnection.open(url, f"dev:{user}", open_timeout=30)
    except Exception as exc:
        return {**outcome, "result": "connect_failed", "detail": repr(exc)}
    async with conn:
        await conn.send({"type": "chat", "content": content, "id": user})
        try:
            reply = await conn.reply(timeout=30)
        except TimeoutError:
            return {**outcome, "result": "no_reply", "detail": str(conn.ws.close_code)}
        outcome["accepted_at"] = time.monotonic()
        if reply["type"] != "run.accepted":
            return {**outcome, "result": reply.get("code", reply["type"]), "detail": reply}
        first = await conn.next_event(reply["run_id"], timeout=60)
        outcome["started_at"] = time.monotonic()
        transcript = await conn.follow(reply["run_id"], timeout=60)
        transcript.events.insert(0, first)
        outcome["violations"] = run_violations(transcript.events)
        assert transcript.terminal is not None
        return {**outcome, "result": transcript.terminal["type"], "events": transcript.events}


async def _burst(url: str, tag: str, sockets: int) -> list[dict[str, Any]]:
    return await asyncio.gather(
        *(_chat_and_follow(url, f"{tag}{i}", f"burst question {i}") for i in range(sockets))
    )


async def test_restart_then_a_burst_of_admissions_chats_and_claims(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    """Every pooled connection dies with the old Redis; the first burst after it answers again must
    not meet one of them: 100 admissions, chats and claims, 0 `unavailable`."""
    stack = Stack(
        own_redis.url,
        tmp_path,
        CHATGW_OFFLINE_TOKEN_DELAY_MS="2",
        CHATGW_OFFLINE_MAX_TOKENS="20",
        **NO_USER_LIMITS,
    )
    try:
        stack.start_both()
        gateway = stack.gateways[0]
        # Warm up: the gateway's and the worker's pools now hold many connections.
        warm = await _burst(gateway.url, "warm", 40)
        assert Counter(o["result"] for o in warm) == {"run.completed": 40}, warm[:3]

        own_redis.restart()  # returns the moment the new server answers PING (AOF loaded)
        answered = time.monotonic()
        after = await _burst(gateway.url, "after", 100)

        results = Counter(o["result"] for o in after)
        assert results == {"run.completed": 100}, [o for o in after if o["result"] != "run.completed"][:3]
        assert not [o["violations"] for o in after if o["violations"]]
        accepted_s = max(o["accepted_at"] for o in after) - answered
        started_s = max(o["started_at"] for o in after) - answered
        print(
            f"after the restart: 100 accepted within {accepted_s:.2f} s, all started within {started_s:.2f} s"
        )
        assert all(p.alive() for p in [*stack.gateways, *stack.workers])
    finally:
        stack.stop()


def _starve_connections_of(admin: redis.Redis, pid: int, kind: str) -> int:
    """Close every ``kind`` connection of process ``pid`` and let nobody open a new one."""
    mine = [c for c in admin.client_list() if c.get("name") == f"chatgw-{kind}-{pid}"]
    connected = int(admin.info("clients")["connected_clients"])
    admin.config_set("maxclients", connected - len(mine))
    for connection in mine:
        admin.client_kill_filter(_id=connection["id"])
    return len(mine)


async def test_a_claim_that_fails_on_redis_is_retried_not_dropped(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    """The worker fetches the message, then cannot claim (its connections are gone and Redis takes no
    new ones): it retries the claim with a short backoff, and the run starts as soon as Redis lets it,
    long before the unclaimed-run re-send (3 x lease = 30 s here) would send the message again."""
    stack = Stack(own_redis.url, tmp_path, CHATGW_OFFLINE_TOKEN_DELAY_MS="2", CHATGW_OFFLINE_MAX_TOKENS="10")
    try:
        stack.start_both()
        worker, gateway = stack.workers[0], stack.gateways[0]
        async with await ChatgwConnection.open(gateway.url, "dev:claims") as conn:
            warm = await conn.chat("warm the pools up")
            await conn.follow(warm["run_id"])

            with own_redis.client() as admin:  # connected before Redis takes no more
                assert _starve_connections_of(admin, worker.pid, "async") > 0
                try:
                    accepted = await conn.chat("claim me when you can")
                    assert accepted["type"] == "run.accepted", accepted
                    wait_for(lambda: "retrying the claim" in worker.output(), 15, what="a failed claim")
                finally:
                    admin.config_set("maxclients", 10000)
            allowed = time.monotonic()
            started = await conn.next_event(accepted["run_id"], timeout=20)
            started_after_s = time.monotonic() - allowed
            run = await conn.follow(accepted["run_id"])
        print(f"the run started {started_after_s:.2f} s after Redis took connections again")
        assert started["type"] == "run.started" and started["attempt"] == 1
        assert run.terminal is not None and run.terminal["type"] == "run.completed"
        assert started_after_s < 10, "the claim was not retried promptly"
        assert "re-sending" not in worker.output(), "the run waited for the unclaimed-run re-send"
    finally:
        stack.stop()


async def _outage_while_runs_stream(
    own_redis: OwnRedis, tmp_path: Path, *, runs: int, outage_s: float, **settings: str
) -> list[FollowedRun]:
    """Start ``runs`` runs, take Redis away for ``outage_s`` while they stream, bring it back (AOF),
    and follow every run to its end with a client that resumes."""
    stack = Stack(own_redis.url, tmp_path, **NO_USER_LIMITS, **settings)
    try:
        stack.start_both()
        gateway = stack.gateways[0]
        async with ResilientClient([gateway.url], "dev:streamer", max_backoff_s=0.5) as client:
            run_ids = [(await client.chat(f"a long answer, please ({i})"))["run_id"] for i in range(runs)]
            for run_id in run_ids:
                await _until_tokens(client, run_id, 3)
            own_redis.stop()
            await asyncio.sleep(outage_s)  # the outage itself
            own_redis.start()
            finished = [await client.wait(run_id, timeout=120) for run_id in run_ids]
            # Whatever the client saw live is what the log holds.
            for run in finished:
                async with await ChatgwConnection.open(gateway.url, "dev:streamer") as replay:
                    await replay.resume(run.run_id, 0)
                    assert (await replay.follow(run.run_id)).events == run.events
        assert all(p.alive() for p in [*stack.gateways, *stack.workers])
        return finished
    finally:
        stack.stop()


async def _until_tokens(client: ResilientClient, run_id: str, count: int) -> None:
    async def enough() -> None:
        while sum(e["type"] == "token" for e in client.follow(run_id).events) < count:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(enough(), 30)


def assert_completed_after_retries(finished: list[FollowedRun]) -> None:
    for run in finished:
        assert_run_invariants(run.events)
        assert run.terminal is not None
        assert run.terminal["type"] == "run.completed", run.terminal  # never agent_error for the store
    retries = [e for run in finished for e in run.events if e["type"] == "run.retrying"]
    assert retries, "an outage longer than the budget gives the attempts up: they must be retried"
    assert {e["reason"] for e in retries} == {"store_unavailable"}


async def test_an_outage_longer_than_the_budget_retries_every_run(
    own_redis: OwnRedis, tmp_path: Path
) -> None:
    """The default-suite variant of the 45 s outage (tests/soak/test_redis_outage.py): the outage
    budget and the leases are shrunk so that a 5 s outage takes the same path: every worker gives
    its attempts up, and when Redis is back the sweeper retries them (run.retrying), to completion."""
    finished = await _outage_while_runs_stream(
        own_redis,
        tmp_path,
        runs=20,
        outage_s=5,
        CHATGW_STORE_OUTAGE_BUDGET_S="2",
        CHATGW_RUN_LEASE_S="2",
        CHATGW_SWEEP_INTERVAL_S="0.5",
        CHATGW_OFFLINE_TOKEN_DELAY_MS="40",
        CHATGW_OFFLINE_MAX_TOKENS="60",
    )
    assert_completed_after_retries(finished)


@pytest.mark.parametrize(("max_attempts", "outcome"), [(1, "failed"), (2, "retry")])
async def test_an_attempt_lost_to_the_store_is_named_so(
    redis: Redis, max_attempts: int, outcome: str
) -> None:
    """The sweeper's verdict, as the client reads it: run.retrying {reason: store_unavailable}, or,
    out of attempts, run.failed {code: store_unavailable} — never worker_lost or agent_error."""
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    store = RunStore(redis, keys, retention_s=60, conversation_ttl_s=60)
    run_id, conversation_id = uuid.uuid4().hex, uuid.uuid4().hex
    await store.create_run(
        run_id=run_id, user="u", conversation_id=conversation_id, new_conversation=True, content="hi"
    )
    claim = await store.claim(run_id, "w1", lease_s=0.05)
    assert isinstance(claim, Claim)
    before = time.time()
    while not (expired := await store.expired_leases()):
        await asyncio.sleep(0.01)
    assert expired[0][0] == run_id and expired[0][1] <= time.time() and expired[0][1] >= before - 1
    try:
        result = await store.requeue(
            run_id, max_attempts=max_attempts, resend_after_s=30, reason="store_unavailable"
        )
        assert result == outcome
        last = orjson.loads((await store.read_log(run_id, 0))[-1][1])
        if outcome == "failed":
            assert last["type"] == "run.failed" and last["error"]["code"] == "store_unavailable"
        else:
            assert last["type"] == "run.retrying" and last["reason"] == "store_unavailable"
            assert last["attempt"] == 2
    finally:
        await redis.delete(*store._run_keys(run_id, conversation_id), keys.user_runs("u"))
