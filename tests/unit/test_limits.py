"""gateway.limits against a real Redis: the token bucket and the socket cap, shared by two Limits
objects as two gateway replicas would share them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.limits import Limits
from shared.errors import ErrorCode, LimitExceeded
from shared.keys import Keys


@pytest.fixture
async def keys(redis: Redis) -> AsyncIterator[Keys]:
    keys = Keys(f"tl{uuid.uuid4().hex[:10]}")
    yield keys
    stale = [key async for key in redis.scan_iter(f"{keys.prefix}:*", count=1000)]
    if stale:
        await redis.delete(*stale)


def limits(redis: Redis, keys: Keys, **overrides: float) -> Limits:
    options: dict[str, float] = {"rate_per_minute": 60, "burst": 3, "max_sockets": 2, "socket_lease_s": 30.0}
    options.update(overrides)
    return Limits(
        redis,
        keys,
        rate_per_minute=int(options["rate_per_minute"]),
        burst=int(options["burst"]),
        max_sockets=int(options["max_sockets"]),
        socket_lease_s=options["socket_lease_s"],
    )


async def test_bucket_allows_the_burst_then_refuses_with_retry_after(redis: Redis, keys: Keys) -> None:
    a, b = limits(redis, keys), limits(redis, keys)  # two replicas
    await a.take_chat("alice")
    await b.take_chat("alice")
    await a.take_chat("alice")
    with pytest.raises(LimitExceeded) as info:
        await b.take_chat("alice")
    assert info.value.code == ErrorCode.RATE_LIMITED
    assert info.value.retry_after_ms is not None and 1 <= info.value.retry_after_ms <= 1000  # 1 token/s
    await a.take_chat("bob")  # per user


async def test_bucket_refills(redis: Redis, keys: Keys) -> None:
    fast = limits(redis, keys, rate_per_minute=600, burst=1)  # one token per 100 ms
    await fast.take_chat("alice")
    with pytest.raises(LimitExceeded) as info:
        await fast.take_chat("alice")
    assert info.value.retry_after_ms is not None
    await asyncio.sleep(info.value.retry_after_ms / 1000 + 0.02)
    await fast.take_chat("alice")


async def test_refused_attempts_do_not_drain_the_bucket(redis: Redis, keys: Keys) -> None:
    fast = limits(redis, keys, rate_per_minute=600, burst=1)
    await fast.take_chat("alice")
    for _ in range(20):
        with pytest.raises(LimitExceeded):
            await fast.take_chat("alice")
    await asyncio.sleep(0.12)
    await fast.take_chat("alice")


async def test_bucket_key_expires_once_full(redis: Redis, keys: Keys) -> None:
    await limits(redis, keys, rate_per_minute=600, burst=2).take_chat("alice")
    ttl = await redis.pttl(keys.user_rate("alice"))
    assert 0 < ttl <= 200


async def test_socket_cap_across_replicas(redis: Redis, keys: Keys) -> None:
    a, b = limits(redis, keys), limits(redis, keys)  # two gateways, two leases
    await a.open_socket("alice", "s1")
    held_by_b = await b.open_socket("alice", "s2")
    assert held_by_b == b.sockets.gateway_id != a.sockets.gateway_id
    with pytest.raises(LimitExceeded) as info:
        await a.open_socket("alice", "s3")
    assert info.value.code == ErrorCode.TOO_MANY_SOCKETS
    await b.open_socket("bob", "s4")
    await a.close_socket("alice", "s1")
    await b.open_socket("alice", "s3")


async def test_concurrent_opens_never_exceed_the_cap(redis: Redis, keys: Keys) -> None:
    replicas = [limits(redis, keys, max_sockets=5) for _ in range(3)]
    results = await asyncio.gather(
        *(replicas[i % 3].open_socket("alice", f"s{i}") for i in range(30)), return_exceptions=True
    )
    assert sum(isinstance(r, str) for r in results) == 5
    assert await redis.hlen(keys.user_sockets("alice")) == 5


async def test_a_crashed_gateways_sockets_age_out(redis: Redis, keys: Keys) -> None:
    crashed = limits(redis, keys, socket_lease_s=0.3)
    await crashed.open_socket("alice", "s1")
    await crashed.open_socket("alice", "s2")
    live = limits(redis, keys, socket_lease_s=30)
    with pytest.raises(LimitExceeded):
        await live.open_socket("alice", "s3")
    await asyncio.sleep(0.4)  # the crashed gateway did not renew its one lease
    await live.open_socket("alice", "s3")


async def test_a_renewing_gateway_keeps_its_sockets_counted(redis: Redis, keys: Keys) -> None:
    live = limits(redis, keys, socket_lease_s=0.3)
    await live.open_socket("alice", "s1")
    await live.open_socket("alice", "s2")
    for _ in range(6):  # one renewal per period for the gateway, none per socket
        await asyncio.sleep(0.1)
        await live.sockets.tick()
    with pytest.raises(LimitExceeded):
        await limits(redis, keys).open_socket("alice", "s3")
