"""The per-user open-socket cap, counted in Redis across every gateway, for O(gateways) upkeep.

A socket's slot is not leased on its own: its *gateway* holds one lease for all of its sockets.

- ``Keys.gateways()``: sorted set of gateway ids scored by lease expiry (Redis ms). Each gateway
  renews its own entry every ``lease_s / 3`` — one command per period, whatever its socket count.
- ``Keys.user_sockets(user)``: hash socket_id → gateway_id, one field per open socket of the user.
  Admission counts only the fields whose gateway's lease is alive (and drops the others).
- ``Keys.gateway_users(gateway_id)``: the users with a slot on that gateway, so that when a
  gateway's lease expires, any live gateway can sweep its slots out of those users' hashes.

A gateway that finds its own lease gone (it stalled for a whole lease, or Redis lost its data) can
no longer vouch for its sockets, since a sweeper may have freed their slots: it takes a new id and
``on_lease_lost`` closes the sockets admitted under the old one, so that they are admitted again.

A release that cannot reach Redis is kept and retried (by the upkeep loop, and before the same user
is admitted again), so a slot is never leaked while the gateway lives. Scripts read Redis's ``TIME``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.errors import ErrorCode, LimitExceeded, StoreUnavailable
from shared.keys import Keys

log = logging.getLogger(__name__)

GATEWAY_LEASE_S = 30.0  # a dead gateway's sockets stop counting this long after its last renewal
SWEEP_BATCH = 200  # users cleaned per script call when sweeping a dead gateway
SWEEP_BATCHES_PER_TICK = 50  # bounds one upkeep tick's work; the rest waits for the next tick

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: gateways. ARGV: gateway_id, lease_ms, register ('1': a new id), dead_limit.
# Returns {1 if the lease is held (renewed or registered) else 0, dead gateway ids (up to dead_limit)}.
# A lapsed lease is not renewed: the gateway must take a new id (its old slots may be swept).
LEASE_SCRIPT = (
    _NOW_MS
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local held = 0
if ARGV[3] == '1' or (score and tonumber(score) >= now) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  held = 1
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[4]))
return {held, dead}
"""
)

# KEYS: user's socket slots, gateways, this gateway's users. ARGV: socket_id, gateway_id, user, max.
# Returns 1 admitted (or already), 0 at the cap, -1 this gateway's lease has lapsed.
ADMIT_SCRIPT = (
    _NOW_MS
    + """
local own = redis.call('ZSCORE', KEYS[2], ARGV[2])
if not own or tonumber(own) < now then
  return -1
end
local fields = redis.call('HGETALL', KEYS[1])
local alive = {}
local count = 0
for i = 1, #fields, 2 do
  local socket, gateway = fields[i], fields[i + 1]
  if socket == ARGV[1] then
    return 1
  end
  local ok = alive[gateway]
  if ok == nil then
    local score = redis.call('ZSCORE', KEYS[2], gateway)
    ok = score ~= false and tonumber(score) >= now
    alive[gateway] = ok
  end
  if ok then
    count = count + 1
  else
    redis.call('HDEL', KEYS[1], socket)
  end
end
if count >= tonumber(ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"""
)

# KEYS: user's socket slots, the holding gateway's users. ARGV: socket_id, gateway_id, user.
# Idempotent: releasing a released socket does nothing.
RELEASE_SCRIPT = """
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if not holder then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
if holder == ARGV[2] then
  for _, gateway in ipairs(redis.call('HVALS', KEYS[1])) do
    if gateway == holder then
      return 1
    end
  end
  redis.call('SREM', KEYS[2], ARGV[3])
end
return 1
"""

# KEYS: gateways, the dead gateway's users, then one socket-slots hash per user.
# ARGV: dead gateway_id, then the users (in the order of their KEYS).
# Frees the dead gateway's slots of these users; once no user is left, forgets the gateway.
# Returns the number of users still to sweep, or -1 if the gateway is alive after all.
SWEEP_SCRIPT = (
    _NOW_MS
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) >= now then
  return -1
end
for i = 3, #KEYS do
  local fields = redis.call('HGETALL', KEYS[i])
  for j = 1, #fields, 2 do
    if fields[j + 1] == ARGV[1] then
      redis.call('HDEL', KEYS[i], fields[j])
    end
  end
  redis.call('SREM', KEYS[2], ARGV[i - 1])
end
local left = redis.call('SCARD', KEYS[2])
if left == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return left
"""
)

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


class SocketSlots:
    """This gateway's view of the socket cap: admit, release, and the lease that keeps slots alive."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        max_sockets: int,
        lease_s: float = GATEWAY_LEASE_S,
        on_lease_lost: Callable[[str], None] = lambda gateway_id: None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._max_sockets = max_sockets
        self.lease_s = lease_s
        self.on_lease_lost = on_lease_lost  # called with the lost id; its sockets must be closed
        self.gateway_id = uuid.uuid4().hex
        self._registered = False
        self._lease_lock = asyncio.Lock()
        # user → {socket_id: gateway_id}: releases that could not reach Redis yet.
        self._pending: dict[str, dict[str, str]] = {}
        self._lease = redis.register_script(LEASE_SCRIPT)
        self._admit = redis.register_script(ADMIT_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)
        self._sweep = redis.register_script(SWEEP_SCRIPT)

    @property
    def pending_releases(self) -> int:
        return sum(len(sockets) for sockets in self._pending.values())

    # ------------------------------------------------------------------ sockets

    async def admit(self, user: str, socket_id: str) -> str:
        """Count a new socket of ``user``; returns the gateway id it is held under. Raises
        LimitExceeded(too_many_sockets) at the cap, StoreUnavailable when Redis is unreachable."""
        try:
            await self._flush_user(user)
            if not self._registered:
                await self._renew()
            for _ in range(2):
                gateway_id = self.gateway_id
                admitted = int(
                    await self._admit(
                        keys=[
                            self._keys.user_sockets(user),
                            self._keys.gateways(),
                            self._keys.gateway_users(gateway_id),
                        ],
                        args=[socket_id, gateway_id, user, self._max_sockets],
                    )
                )
                if admitted == -1:
                    await self._renew(lapsed=gateway_id)  # take a new id, then try once more
                    continue
                if admitted == 0:
                    raise LimitExceeded(
                        f"you already have {self._max_sockets} sockets open; close one first",
                        code=ErrorCode.TOO_MANY_SOCKETS,
                    )
                if gateway_id != self.gateway_id:
                    # The lease was lost while this admission was in flight: its slot may be swept.
                    await self._release_now(user, socket_id, gateway_id)
                    continue
                return gateway_id
        except _REDIS_DOWN as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        raise StoreUnavailable("this gateway could not hold a socket-slot lease; retry")

    async def release(self, user: str, socket_id: str, gateway_id: str | None = None) -> None:
        """Free a socket's slot. Never raises for an unreachable Redis: the release is kept and
        retried, so the slot cannot leak while this gateway lives."""
        gateway_id = gateway_id or self.gateway_id
        try:
            await self._release_now(user, socket_id, gateway_id)
        except _REDIS_DOWN:
            self._pending.setdefault(user, {})[socket_id] = gateway_id

    async def _release_now(self, user: str, socket_id: str, gateway_id: str) -> None:
        await self._release(
            keys=[self._keys.user_sockets(user), self._keys.gateway_users(gateway_id)],
            args=[socket_id, gateway_id, user],
        )

    async def _flush_user(self, user: str) -> None:
        pending = self._pending.get(user)
        while pending:
            socket_id, gateway_id = next(iter(pending.items()))
            await self._release_now(user, socket_id, gateway_id)
            del pending[socket_id]
        self._pending.pop(user, None)

    # ------------------------------------------------------------------ upkeep

    async def run_forever(self) -> None:
        """Renew the lease, retry pending releases and sweep dead gateways, every ``lease_s / 3``."""
        interval = self.lease_s / 3
        while True:
            try:
                await self.tick()
            except StoreUnavailable as exc:
                log.debug("socket-slot upkeep: %s", exc)
            except Exception:
                log.exception("socket-slot upkeep failed; retrying next period")
            await asyncio.sleep(interval)

    async def tick(self) -> None:
        """One upkeep period's work (also run at once when Redis comes back)."""
        try:
            dead = await self._renew()
            for user in list(self._pending):
                await self._flush_user(user)
            for gateway_id in dead:
                if gateway_id != self.gateway_id:
                    await self._sweep_gateway(gateway_id)
        except _REDIS_DOWN as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc

    async def _renew(self, lapsed: str | None = None) -> list[str]:
        """Renew (or first register) the lease; take a new id when it lapsed. Returns dead gateways."""
        async with self._lease_lock:
            if lapsed is not None and lapsed != self.gateway_id:
                return []  # another caller already replaced that id
            lease_ms = max(1, int(self.lease_s * 1000))
            held, dead = await self._lease(
                keys=[self._keys.gateways()],
                args=[self.gateway_id, lease_ms, "0" if self._registered else "1", 10],
            )
            if int(held) != 1:
                lost, self.gateway_id = self.gateway_id, uuid.uuid4().hex
                log.warning(
                    "socket-slot lease %s lapsed; now %s; its sockets reconnect", lost, self.gateway_id
                )
                self.on_lease_lost(lost)
                held, dead = await self._lease(
                    keys=[self._keys.gateways()], args=[self.gateway_id, lease_ms, "1", 10]
                )
            self._registered = True
            return [str(g) for g in dead]

    async def _sweep_gateway(self, gateway_id: str) -> None:
        users_key = self._keys.gateway_users(gateway_id)
        for _ in range(SWEEP_BATCHES_PER_TICK):
            users = cast(list[str], await self._redis.srandmember(users_key, SWEEP_BATCH))
            left = int(
                await self._sweep(
                    keys=[self._keys.gateways(), users_key, *(self._keys.user_sockets(u) for u in users)],
                    args=[gateway_id, *users],
                )
            )
            if left <= 0:
                if left == 0:
                    log.info("swept the socket slots of dead gateway %s", gateway_id)
                return

    async def deregister(self) -> None:
        """At shutdown: the sockets are closed; drop the lease so other gateways sweep at once."""
        with contextlib.suppress(*_REDIS_DOWN):
            await self._redis.zadd(self._keys.gateways(), {self.gateway_id: 0})
