"""Runs waiting for a worker and the age of the oldest: two cluster-wide gauges every gateway exports.

Not Dramatiq's queue length: each worker prefetches up to twice its concurrency, so a run can wait in
a worker's memory while the queue list looks empty — exactly when workers are saturated. The run
hash is the truth: a run waits for a worker while its status is ``queued`` (``waiting`` runs wait for
their conversation, not for a worker; a run re-queued after a lost worker counts from its creation,
as its user has waited that long). Every run in flight is in the leases sorted set, so the walk reads
the set by rank, :data:`CHUNK` runs per Lua call (status and created_at read inside Redis: Redis is
never blocked for more than one chunk, and the gateway does O(1) work per chunk).

One gateway per interval does the walk (``SET NX`` on ``P:stats:queue:lock``) and stores the result in
``P:stats:queue``; the others read that line. So the cost does not grow with the number of gateways.
A ``prometheus_client`` collector is synchronous and cannot await Redis, hence a timer in the lifespan.
Measured (docs/observability.md): about 1.5 µs of Redis time per run in flight, once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.metrics import GatewayMetrics
from shared.keys import Keys

log = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 5.0
CHUNK = 500  # runs per Lua call: about 0.7 ms of Redis time
MAX_SCANNED = 200_000  # beyond this many runs in flight the count is a lower bound

# KEYS: leases. ARGV: run key prefix ("P:run:"), first rank, last rank.
# Returns "WAITING SCANNED OLDEST_CREATED_AT" for that slice (the last one empty when no run waits).
QUEUE_CHUNK_SCRIPT = """
local ids = redis.call('ZRANGE', KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local waiting, oldest, oldest_text = 0, nil, ''
for _, run_id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[1] .. run_id, 'status', 'created_at')
  if f[1] == 'queued' and f[2] then
    waiting = waiting + 1
    local created = tonumber(f[2])
    if oldest == nil or created < oldest then oldest, oldest_text = created, f[2] end
  end
end
return waiting .. ' ' .. #ids .. ' ' .. oldest_text
"""


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    waiting: int
    scanned: int
    oldest_created_at: float | None  # Unix time; None when no run waits

    @classmethod
    def parse(cls, line: str) -> QueueSnapshot:
        waiting, scanned, oldest = [*line.split(" "), "", ""][:3]
        return cls(int(waiting), int(scanned), float(oldest) if oldest else None)

    def line(self) -> str:
        oldest = "" if self.oldest_created_at is None else repr(self.oldest_created_at)
        return f"{self.waiting} {self.scanned} {oldest}"

    def merge(self, other: QueueSnapshot) -> QueueSnapshot:
        candidates = [t for t in (self.oldest_created_at, other.oldest_created_at) if t is not None]
        return QueueSnapshot(
            self.waiting + other.waiting, self.scanned + other.scanned, min(candidates, default=None)
        )

    def oldest_age_s(self, now: float) -> float:
        return 0.0 if self.oldest_created_at is None else max(0.0, now - self.oldest_created_at)


EMPTY = QueueSnapshot(0, 0, None)


class QueueDepth:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        metrics: GatewayMetrics,
        *,
        interval_s: float = REFRESH_INTERVAL_S,
        chunk: int = CHUNK,
        max_scanned: int = MAX_SCANNED,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._metrics = metrics
        self._interval_s = interval_s
        self._chunk = chunk
        self._max_scanned = max_scanned
        self._walk_chunk = redis.register_script(QUEUE_CHUNK_SCRIPT)

    async def walk(self) -> QueueSnapshot:
        """Read every run in flight, a chunk at a time (the set may change meanwhile: a gauge)."""
        total = EMPTY
        while total.scanned < self._max_scanned:
            first = total.scanned
            line = await self._walk_chunk(
                keys=[self._keys.leases()], args=[self._keys.run(""), first, first + self._chunk - 1]
            )
            part = QueueSnapshot.parse(str(line))
            total = total.merge(part)
            if part.scanned < self._chunk:
                return total
        log.warning("more than %d runs in flight: the waiting-runs gauge is a lower bound", total.scanned)
        return total

    async def refresh(self) -> QueueSnapshot | None:
        """Walk if no other gateway does this interval, else read its result; set the gauges."""
        interval_ms = max(1, int(self._interval_s * 1000))
        if await self._redis.set(self._keys.queue_stats_lock(), "1", nx=True, px=interval_ms):
            snapshot = await self.walk()
            await self._redis.set(self._keys.queue_stats(), snapshot.line(), px=3 * interval_ms)
        else:
            line = await self._redis.get(self._keys.queue_stats())
            if line is None:
                return None  # the walk of this interval is under way elsewhere
            snapshot = QueueSnapshot.parse(str(line))
        self._metrics.runs_waiting.set(snapshot.waiting)
        self._metrics.oldest_waiting.set(snapshot.oldest_age_s(time.time()))
        return snapshot

    async def run_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.debug("queue depth not refreshed: %s", exc)  # /readyz reports Redis; keep going
            await asyncio.sleep(self._interval_s)
