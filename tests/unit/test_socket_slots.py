"""gateway.socket_slots against a real Redis: the per-user socket cap held by one lease per gateway.

Two SocketSlots objects with their own gateway ids stand for two gateway processes. The upkeep cost
is counted on a Redis of the test's own (``INFO commandstats`` is server-wide)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from cli.embedded_redis import EmbeddedRedis
from gateway.socket_slots import SocketSlots
from shared.errors import ErrorCode, LimitExceeded, StoreUnavailable
from shared.keys import Keys

CAP = 10


@pytest.fixture
async def keys(redis: Redis) -> AsyncIterator[Keys]:
    keys = Keys(f"ts{uuid.uuid4().hex[:10]}")
    yield keys
    stale = [key async for key in redis.scan_iter(f"{keys.prefix}:*", count=1000)]
    if stale:
        await redis.delete(*stale)


@pytest.fixture(scope="module")
def own_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    try:
        yield server
    finally:
        server.stop()


def gateway(redis: Redis, keys: Keys, lease_s: float = 30.0) -> SocketSlots:
    return SocketSlots(redis, keys, max_sockets=CAP, lease_s=lease_s)


async def open_all(slots: list[SocketSlots], users: list[str], per_user: int) -> dict[str, int]:
    """Open ``per_user`` sockets for every user at once, alternating gateways; admitted per user."""

    pool_room = asyncio.Semaphore(50)  # redis-py's default pool holds 100 connections

    async def one(i: int, user: str) -> bool:
        try:
            async with pool_room:
                await slots[i % len(slots)].admit(user, f"{user}-s{i}")
        except LimitExceeded as exc:
            assert exc.code == ErrorCode.TOO_MANY_SOCKETS
            return False
        return True

    jobs = [(user, one(i, user)) for user in users for i in range(per_user)]
    results = await asyncio.gather(*(job for _, job in jobs))
    admitted = dict.fromkeys(users, 0)
    for (user, _), ok in zip(jobs, results, strict=True):
        admitted[user] += ok
    return admitted


async def test_the_eleventh_socket_of_every_user_is_refused_across_two_gateways(
    redis: Redis, keys: Keys
) -> None:
    a, b = gateway(redis, keys), gateway(redis, keys)
    users = [f"u{i}" for i in range(200)]
    admitted = await open_all([a, b], users, CAP + 1)
    assert set(admitted.values()) == {CAP}
    for user in users[:5]:
        assert await redis.hlen(keys.user_sockets(user)) == CAP
        with pytest.raises(LimitExceeded):
            await b.admit(user, "one-more")


async def test_a_dead_gateways_slots_are_freed_when_its_lease_expires(redis: Redis, keys: Keys) -> None:
    dead, live = gateway(redis, keys, lease_s=0.3), gateway(redis, keys)
    users = [f"u{i}" for i in range(30)]
    await open_all([dead], users, CAP)
    with pytest.raises(LimitExceeded):
        await live.admit("u0", "late")
    await asyncio.sleep(0.4)  # the dead gateway renews nothing
    await live.admit("u0", "late")  # lazily: admission ignores (and drops) a dead gateway's slots
    await live.tick()  # eagerly: the live gateway's upkeep sweeps the dead one
    assert await redis.zscore(keys.gateways(), dead.gateway_id) is None
    assert not await redis.exists(keys.gateway_users(dead.gateway_id))
    for user in users[1:]:
        assert not await redis.exists(keys.user_sockets(user)), user
    assert await redis.hgetall(keys.user_sockets("u0")) == {"late": live.gateway_id}


async def test_a_live_gateways_slots_last_with_one_renewal_per_period(redis: Redis, keys: Keys) -> None:
    live = gateway(redis, keys, lease_s=0.3)
    await open_all([live], ["alice"], CAP)
    for _ in range(8):
        await asyncio.sleep(0.1)
        await live.tick()
    with pytest.raises(LimitExceeded):
        await gateway(redis, keys).admit("alice", "eleventh")
    await live.release("alice", "alice-s0")
    await gateway(redis, keys).admit("alice", "eleventh")


async def test_releasing_twice_frees_one_slot(redis: Redis, keys: Keys) -> None:
    slots = gateway(redis, keys)
    await open_all([slots], ["alice"], CAP)
    for _ in range(3):
        await slots.release("alice", "alice-s0")
    assert await redis.hlen(keys.user_sockets("alice")) == CAP - 1
    assert await redis.sismember(keys.gateway_users(slots.gateway_id), "alice")
    for i in range(1, CAP):
        await slots.release("alice", f"alice-s{i}")
    assert not await redis.exists(keys.user_sockets("alice"), keys.gateway_users(slots.gateway_id))


async def test_a_gateway_that_lost_its_lease_takes_a_new_id_and_drops_its_sockets(
    redis: Redis, keys: Keys
) -> None:
    lost: list[str] = []
    stalled = SocketSlots(redis, keys, max_sockets=CAP, lease_s=0.2, on_lease_lost=lost.append)
    first = await stalled.admit("alice", "s1")
    await asyncio.sleep(0.3)  # "stalled" for longer than its lease
    await gateway(redis, keys).tick()  # another gateway sweeps it meanwhile
    assert not await redis.exists(keys.user_sockets("alice"))
    # Its next admission notices, takes a new id, tells the sockets of the old one, and succeeds.
    second = await stalled.admit("alice", "s2")
    assert lost == [first] and second == stalled.gateway_id != first
    assert await redis.hgetall(keys.user_sockets("alice")) == {"s2": second}


async def test_upkeep_costs_the_same_few_commands_whatever_the_socket_count(own_redis: EmbeddedRedis) -> None:
    redis = Redis.from_url(own_redis.url, decode_responses=True)
    try:
        keys = Keys(f"ts{uuid.uuid4().hex[:10]}")
        slots = gateway(redis, keys)

        async def commands_per_tick() -> dict[str, int]:
            """Commands one upkeep tick sends, and those its script runs inside Redis."""
            await slots.tick()  # scripts loaded, nothing pending
            before = await redis.info("commandstats")
            await slots.tick()
            after = await redis.info("commandstats")
            calls = {
                name.removeprefix("cmdstat_"): int(stats["calls"])
                - int(before.get(name, {"calls": 0})["calls"])
                for name, stats in after.items()
                if name != "cmdstat_info"
            }
            return {name: n for name, n in calls.items() if n}

        await open_all([slots], ["u0"], CAP)
        with_ten = await commands_per_tick()
        await open_all([slots], [f"u{i}" for i in range(1, 500)], CAP)
        with_5000 = await commands_per_tick()
        assert with_ten == with_5000
        # One EVALSHA (renew the gateway's lease, list dead gateways) and what the script calls.
        assert with_5000 == {"evalsha": 1, "time": 1, "zscore": 1, "zadd": 1, "zrangebyscore": 1}
    finally:
        await redis.aclose()


async def test_a_release_that_missed_redis_is_retried_before_the_user_is_admitted_again(
    tmp_path: Path,
) -> None:
    server = EmbeddedRedis(appendonly=True, data_dir=tmp_path).start()
    redis = Redis.from_url(server.url, decode_responses=True)
    try:
        keys = Keys("ts")
        slots = gateway(redis, keys)
        await open_all([slots], ["alice"], CAP)
        server.stop()
        await slots.release("alice", "alice-s0")  # does not raise: kept for later
        assert slots.pending_releases == 1
        with pytest.raises(StoreUnavailable):
            await slots.admit("alice", "eleventh")
        server = EmbeddedRedis(port=server.port, appendonly=True, data_dir=tmp_path).start()
        await slots.admit("alice", "eleventh")  # the pending release went first
        assert slots.pending_releases == 0
        assert await redis.hlen(keys.user_sockets("alice")) == CAP
    finally:
        await redis.aclose()
        server.stop()
