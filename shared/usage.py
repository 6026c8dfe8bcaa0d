"""Tokens each user spent today, counted in Redis so a daily budget holds across every replica.

Workers add what a run cost (:mod:`worker.billing`); gateways read it before accepting a chat and
answer ``GET /v1/usage``. The day is the **UTC** day of Redis's own clock (``TIME`` inside the
script), so replicas whose clocks disagree still agree on when a day ends. One hash per user
(``Keys.user_usage``: ``day`` = days since the epoch, ``tokens``) that expires an hour after its day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from shared.errors import BudgetExceeded
from shared.keys import Keys
from shared.store_errors import translate_redis_errors

DAY_S = 86_400
KEEP_AFTER_DAY_S = 3600  # a count outlives its day a little: a late add must not resurrect it at 0

# KEYS: usage hash. ARGV: tokens to add (0: only read). Returns {tokens today, next UTC midnight (s)}.
USAGE_SCRIPT = f"""
local now = tonumber(redis.call('TIME')[1])
local day = math.floor(now / {DAY_S})
local f = redis.call('HMGET', KEYS[1], 'day', 'tokens')
local tokens = 0
if tonumber(f[1]) == day then tokens = tonumber(f[2]) or 0 end
local add = tonumber(ARGV[1])
if add > 0 then
  tokens = tokens + add
  redis.call('HSET', KEYS[1], 'day', day, 'tokens', tokens)
  redis.call('EXPIREAT', KEYS[1], (day + 1) * {DAY_S} + {KEEP_AFTER_DAY_S})
end
return {{tokens, (day + 1) * {DAY_S}}}
"""


@dataclass(frozen=True, slots=True)
class DailyUsage:
    tokens: int  # billed today (UTC)
    resets_at: int  # Unix time (s) of the next UTC midnight, by Redis's clock

    def remaining(self, budget: int | None) -> int | None:
        return None if budget is None else max(0, budget - self.tokens)


def midnight_iso(resets_at: int) -> str:
    return datetime.fromtimestamp(resets_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class UsageLedger:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._script = redis.register_script(USAGE_SCRIPT)

    @translate_redis_errors
    async def add(self, user: str, tokens: int) -> DailyUsage:
        """Bill ``tokens`` to ``user`` today; returns the day's total."""
        tokens_today, resets_at = await self._script(
            keys=[self._keys.user_usage(user)], args=[max(0, tokens)]
        )
        return DailyUsage(int(tokens_today), int(resets_at))

    async def today(self, user: str) -> DailyUsage:
        return await self.add(user, 0)

    async def check(self, user: str, budget: int | None, *, now: float) -> DailyUsage | None:
        """Raise BudgetExceeded when ``user`` has spent ``budget`` today; None (no Redis call)
        when there is no budget. ``now``: the caller's clock, only for ``retry_after_ms``."""
        if budget is None:
            return None
        usage = await self.today(user)
        if usage.tokens >= budget:
            raise BudgetExceeded(
                f"your daily token budget ({budget}) is spent ({usage.tokens} today); "
                f"it resets at {midnight_iso(usage.resets_at)}",
                resets_at=usage.resets_at,
                retry_after_ms=max(1, int((usage.resets_at - now) * 1000)),
            )
        return usage
