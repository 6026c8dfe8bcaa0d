"""Per-user limits that hold across every gateway replica, because they are counted in Redis.

- chat rate: a token bucket per user (``CHATGW_RATE_LIMIT_PER_MINUTE``, burst
  ``CHATGW_RATE_LIMIT_BURST``) in ``Keys.user_rate``; a refused frame gets ``retry_after_ms``.
- open sockets: ``CHATGW_MAX_SOCKETS_PER_USER``, counted by :class:`gateway.socket_slots.SocketSlots`
  (one lease per gateway, not per socket: a crashed gateway's slots free themselves when it expires).

Each check is one Lua script, so concurrent sockets (on any replica) cannot both take the last slot.
Clocks: the scripts read Redis's ``TIME``, never a gateway's, so replicas need not agree on the time.
"""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.socket_slots import GATEWAY_LEASE_S, SocketSlots
from shared.errors import ErrorCode, LimitExceeded
from shared.keys import Keys
from shared.store_errors import translate_redis_errors

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: bucket. ARGV: capacity, refill per ms. The state is the string "tokens updated_ms".
# Returns 0 when a token was taken, else the milliseconds until one will be there.
RATE_SCRIPT = (
    _NOW_MS
    + """
local cap = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2])
local tokens, ts = cap, now
local state = redis.call('GET', KEYS[1])
if state then
  local a, b = string.match(state, '^(%S+) (%S+)$')
  tokens, ts = tonumber(a) or cap, tonumber(b) or now
end
tokens = math.min(cap, tokens + math.max(0, now - ts) * per_ms)
if tokens < 1 then
  return math.max(1, math.ceil((1 - tokens) / per_ms))
end
-- The key lives as long as the bucket takes to refill: a full bucket needs no state.
local ttl = math.max(1, math.ceil((cap - tokens + 1) / per_ms))
redis.call('SET', KEYS[1], string.format('%.6f %d', tokens - 1, now), 'PX', ttl)
return 0
"""
)


class Limits:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        rate_per_minute: int,
        burst: int,
        max_sockets: int,
        socket_lease_s: float = GATEWAY_LEASE_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._burst = burst
        self._per_ms = rate_per_minute / 60_000
        self._rate = redis.register_script(RATE_SCRIPT)
        self.sockets = SocketSlots(redis, keys, max_sockets=max_sockets, lease_s=socket_lease_s)

    @translate_redis_errors
    async def take_chat(self, user: str, *, per_minute: int | None = None, burst: int | None = None) -> None:
        """Spend one chat token of ``user`` or raise LimitExceeded(rate_limited, retry_after_ms).
        ``per_minute``/``burst``: the user's tier's rate, when it has its own (docs/tiers.md)."""
        capacity = self._burst if burst is None else burst
        per_ms = self._per_ms if per_minute is None else per_minute / 60_000
        wait_ms = int(await self._rate(keys=[self._keys.user_rate(user)], args=[capacity, per_ms]))
        if wait_ms > 0:
            raise LimitExceeded(
                f"too many chat frames; retry in {wait_ms} ms",
                code=ErrorCode.RATE_LIMITED,
                retry_after_ms=wait_ms,
            )

    async def open_socket(self, user: str, socket_id: str) -> str:
        """Count a new socket of ``user`` (returns the gateway id holding its slot) or raise
        LimitExceeded(too_many_sockets) / StoreUnavailable."""
        return await self.sockets.admit(user, socket_id)

    async def close_socket(self, user: str, socket_id: str, gateway_id: str | None = None) -> None:
        """Free the socket's slot (retried later if Redis is unreachable now)."""
        await self.sockets.release(user, socket_id, gateway_id)
