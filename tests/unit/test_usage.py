"""shared.usage against a real Redis (the day by Redis's clock, the budget check two replicas share)
and worker.billing's rule for what a run's terminal event bills."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.errors import BudgetExceeded, ErrorCode
from shared.keys import Keys
from shared.usage import DAY_S, UsageLedger, midnight_iso
from worker.billing import billed_tokens


@pytest.fixture
async def keys(redis: Redis) -> AsyncIterator[Keys]:
    keys = Keys(f"tu{uuid.uuid4().hex[:10]}")
    yield keys
    stale = [key async for key in redis.scan_iter(f"{keys.prefix}:*", count=1000)]
    if stale:
        await redis.delete(*stale)


async def redis_day(redis: Redis) -> int:
    seconds, _ = await redis.time()
    return int(seconds) // DAY_S


async def test_usage_adds_up_per_user_and_resets_at_the_next_utc_midnight(redis: Redis, keys: Keys) -> None:
    ledger = UsageLedger(redis, keys)
    assert (await ledger.today("alice")).tokens == 0
    await ledger.add("alice", 120)
    usage = await ledger.add("alice", 30)
    assert usage.tokens == 150
    assert (await ledger.today("bob")).tokens == 0
    day = await redis_day(redis)
    assert usage.resets_at == (day + 1) * DAY_S
    assert midnight_iso(usage.resets_at).endswith("T00:00:00Z")
    # The count expires an hour after its day, not before.
    ttl = await redis.ttl(keys.user_usage("alice"))
    assert 3600 < ttl <= DAY_S + 3600


async def test_yesterdays_count_is_not_todays(redis: Redis, keys: Keys) -> None:
    ledger = UsageLedger(redis, keys)
    yesterday = await redis_day(redis) - 1
    await redis.hset(keys.user_usage("alice"), mapping={"day": yesterday, "tokens": 9999})
    assert (await ledger.today("alice")).tokens == 0
    assert (await ledger.add("alice", 5)).tokens == 5


async def test_a_spent_budget_refuses_with_its_reset_time(redis: Redis, keys: Keys) -> None:
    gateway_a, gateway_b = UsageLedger(redis, keys), UsageLedger(redis, keys)
    assert await gateway_a.check("alice", None, now=time.time()) is None  # no budget: no Redis call
    await gateway_b.check("alice", 100, now=time.time())
    await UsageLedger(redis, keys).add("alice", 100)  # a worker bills the run that crossed it
    with pytest.raises(BudgetExceeded) as err:
        await gateway_b.check("alice", 100, now=time.time())
    refusal = err.value
    assert refusal.code == ErrorCode.BUDGET_EXCEEDED
    assert refusal.resets_at == ((await redis_day(redis)) + 1) * DAY_S
    assert refusal.retry_after_ms is not None and 0 < refusal.retry_after_ms <= DAY_S * 1000
    assert midnight_iso(refusal.resets_at) in refusal.message
    with pytest.raises(BudgetExceeded):
        await gateway_a.check("alice", 100, now=time.time())  # the other replica agrees
    await gateway_a.check("bob", 100, now=time.time())


def test_a_run_bills_its_reported_usage_else_what_it_streamed() -> None:
    completed = ("run.completed", {"content": "x", "usage": {"prompt_tokens": 40, "completion_tokens": 6}})
    assert billed_tokens(completed, 6, cached=False) == 46
    assert billed_tokens(completed, 6, cached=True) == 0  # a cached answer costs nothing
    assert billed_tokens(("run.stopped", {"content": "a b"}), 2, cached=False) == 2
    truncated = ("run.completed", {"content": "a b c", "truncated": True})
    assert billed_tokens(truncated, 3, cached=False) == 3
    assert (
        billed_tokens(("run.failed", {"error": {"code": "llm_timeout", "message": "m"}}), 0, cached=False)
        == 0
    )
