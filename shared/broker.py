"""The Dramatiq Redis broker both sides build: the gateway to enqueue runs, the worker to consume.

Dramatiq's Redis consumer polls: with nothing to fetch it sleeps, backing off up to the worker
timeout, so a run enqueued on an idle system waits for the next poll, and a short timeout makes every
idle worker burn CPU. Here the consumer waits on a **doorbell** instead: every enqueue pushes one
ring onto a list next to the queue, and an idle consumer blocks on ``BLPOP`` of that list. A ring
wakes exactly one waiting consumer, at once. Dramatiq's own message, fetch and ack bookkeeping (its
``dispatch.lua``) is untouched; the doorbell only replaces the sleep.

The consumer also fetches only for the worker's **free capacity** (:class:`Capacity`): a worker
whose slots are all busy leaves waiting runs to a worker that has room, and does not even listen for
the doorbell until a slot frees up.

**Priority** (docs/tiers.md). Each tier has its own queue, and Dramatiq runs one consumer per queue,
each fetching on its own. Those of one process share its slots, so they decide one at a time (a
lock) and count each other's fetched-but-unclaimed messages; and with several run queues a consumer
fetches only on its queue's turn: :func:`shared.tiers.next_queue` over the enqueue times of each
queue's oldest message (read in one script, :data:`HEADS_SCRIPT`), which favours higher tiers and ages
lower ones so they are never starved. A consumer whose queue has waiting runs but not the turn rings
the favoured queue's doorbell and looks again shortly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import dq_name

from shared.keys import Keys
from shared.redis_factory import sync_redis_client
from shared.settings import Settings
from shared.tiers import Tiers, next_queue

DOORBELL_MAX_RINGS = 64  # rings beyond what any fetch can use only cause empty wake-ups
# An idle consumer still wakes this often: it keeps Dramatiq's heartbeat fresh and picks up
# messages that arrive without a ring (Dramatiq re-queueing a dead worker's unacked messages).
IDLE_WAKE_S = 1.0
# The delay queue holds messages until their eta; its consumer must look again soon (while it holds
# any: an empty one waits for its doorbell like the others).
DELAY_QUEUE_WAKE_S = 0.1
# A run queue that is not on turn looks again this often (the favoured queue is being fetched).
YIELD_RECHECK_S = 0.05
# Room held by messages fetched but not yet claimed frees within milliseconds: poll, don't spin.
IN_FLIGHT_WAIT_S = 0.002
# While Redis is unreachable the consumer looks again after this, doubling up to the cap.
RECONNECT_FIRST_S = 0.05
RECONNECT_MAX_S = 1.0

log = logging.getLogger(__name__)

# KEYS: for each run queue, highest priority first, Dramatiq's message list and message hash
# ($namespace:$queue and $namespace:$queue.msgs, see dramatiq's dispatch.lua). Read-only. Returns,
# per queue, when its oldest message was enqueued (Unix ms, Dramatiq's message_timestamp): 0 when it
# cannot be read (such a queue goes first, so its consumer clears it), -1 when the queue is empty.
HEADS_SCRIPT = """
local out = {}
for i = 1, #KEYS, 2 do
  local enqueued = -1
  local id = redis.call('LINDEX', KEYS[i], 0)
  if id then
    enqueued = 0
    local data = redis.call('HGET', KEYS[i + 1], id)
    if data then
      local ok, message = pcall(cjson.decode, data)
      if ok and type(message) == 'table' and tonumber(message.message_timestamp) then
        enqueued = tonumber(message.message_timestamp)
      end
    end
  end
  out[#out + 1] = enqueued
end
return out
"""


class Capacity:
    """A worker process's run slots, shared by its event loop (which takes and frees slots) and
    Dramatiq's consumer thread (which fetches only while there is room)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self._room = threading.Event()
        self._room.set()

    @property
    def free(self) -> int:
        return max(0, self.limit - self.busy)

    def take(self) -> None:
        self.busy += 1
        if self.busy >= self.limit:
            self._room.clear()

    def release(self) -> None:
        self.busy -= 1
        if self.busy < self.limit:
            self._room.set()

    def close(self) -> None:
        """Take no new runs (graceful shutdown)."""
        self.limit = 0
        self._room.clear()

    def wait_for_room(self, timeout_s: float) -> bool:
        return self._room.wait(timeout_s)


class DoorbellRedisBroker(RedisBroker):
    def __init__(
        self,
        *,
        client: redis.Redis,
        namespace: str,
        middleware: Sequence[Any],
        capacity: Capacity | None = None,
        run_queues: Sequence[str] = (),
        aging_s: float = 0.0,
    ) -> None:
        super().__init__(client=client, namespace=namespace, middleware=list(middleware))  # type: ignore[no-untyped-call]
        self.capacity = capacity
        self.run_queues = list(run_queues)  # highest priority first (shared/tiers.py)
        self.aging_ms = aging_s * 1000
        self.fetch_lock = threading.Lock()  # one fetch decision at a time among this process's consumers
        self.fetched = threading.Condition()  # notified when a run queue's consumer fetched messages
        self.run_consumers: dict[str, _DoorbellConsumer] = {}  # the current consumer of each run queue
        self._heads = self.client.register_script(HEADS_SCRIPT)

    def in_flight(self) -> int:
        """Messages this process's run-queue consumers fetched that no run has claimed yet."""
        return sum(int(c.outstanding_message_count) for c in list(self.run_consumers.values()))

    def heads(self) -> list[int | None]:
        """When each run queue's oldest message was enqueued (ms), highest priority first; None: empty."""
        keys = [f"{self.namespace}:{queue}{part}" for queue in self.run_queues for part in ("", ".msgs")]
        return [None if int(at) < 0 else int(at) for at in self._heads(keys=keys)]

    def doorbell(self, queue_name: str) -> str:
        return f"{self.namespace}:doorbell:{queue_name}"

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _DoorbellConsumer

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        enqueued: Message[Any] = super().enqueue(message, delay=delay)
        self.ring(dq_name(message.queue_name) if delay is not None else message.queue_name)
        return enqueued

    def ring(self, queue_name: str) -> None:
        key = self.doorbell(queue_name)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, DOORBELL_MAX_RINGS - 1)
        pipe.execute()


class _DoorbellConsumer(_RedisConsumer):
    broker: DoorbellRedisBroker

    def __init__(self, broker: DoorbellRedisBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._delay_queue = queue_name.endswith(".DQ")
        self._doorbell = broker.doorbell(queue_name)
        # Its place in the priority order; None with one run queue (nothing to take turns with, and no
        # script to run per fetch) and for a delay queue.
        self._rank: int | None = None
        self._reconnect_s = 0.0  # > 0 while Redis is unreachable
        if queue_name in broker.run_queues:
            broker.run_consumers[queue_name] = self  # replaces the consumer of a restarted thread
            if len(broker.run_queues) > 1:
                self._rank = broker.run_queues.index(queue_name)

    def _room(self) -> int:
        """How many messages to fetch now."""
        capacity = self.broker.capacity
        if capacity is None or self._delay_queue:
            return int(self.prefetch) - int(self.outstanding_message_count)
        # Messages handed to the worker but not yet claimed count too (those of every run queue: they
        # share the slots), so a burst is not overfetched.
        return capacity.free - self.broker.in_flight()

    def __next__(self) -> MessageProxy | None:
        try:
            if not self.message_cache:
                room, yielded = self._fetch()
                if room > 0:
                    self._reconnect_s = 0.0  # Redis answered (the fetch, or the heads of the queues)
                if not self.message_cache:
                    self._wait(room > 0, yielded)
                    return None
            self.misses = 0
            message = Message.decode(self.message_cache.pop(0))
            self.queued_message_ids.add(message.message_id)
            return MessageProxy(message)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Ride the outage out here: raising would make Dramatiq restart the consumer only after
            # 3 s and drop the delayed messages it holds (on_busy=enqueue waits).
            self._back_off(exc)
            return None

    def _back_off(self, exc: Exception) -> None:
        if not self._reconnect_s:
            log.warning("queue %s: Redis unreachable (%s); fetching again shortly", self.queue_name, exc)
        # Doubles from RECONNECT_FIRST_S to RECONNECT_MAX_S; a successful fetch starts it over.
        self._reconnect_s = min(max(self._reconnect_s * 2, RECONNECT_FIRST_S), RECONNECT_MAX_S)
        time.sleep(self._reconnect_s)

    def _fetch(self) -> tuple[int, bool]:
        """Fetch for the free room; returns it, and whether this queue gave its turn to another."""
        broker = self.broker
        if broker.capacity is None or self._delay_queue:
            room = self._room()
            if room > 0:
                self.message_cache = broker.do_fetch(self.queue_name, room)
            return room, False
        with broker.fetch_lock:
            room = self._room()
            if room <= 0:
                return room, False
            if self._rank is not None:
                heads = broker.heads()
                turn = next_queue(heads, broker.aging_ms)
                if heads[self._rank] is not None and turn is not None and turn != self._rank:
                    # Wake the favoured queue's consumer, here or on another worker with room.
                    broker.ring(broker.run_queues[turn])
                    return room, True
            self.message_cache = broker.do_fetch(self.queue_name, room)
        if self.message_cache:
            with broker.fetched:
                broker.fetched.notify_all()
        return room, False

    def _wait(self, has_room: bool, yielded: bool = False) -> None:
        if yielded:
            with self.broker.fetched:
                self.broker.fetched.wait(YIELD_RECHECK_S)
        elif has_room:
            # Wakes at once when a message is enqueued; a ring that finds nothing costs one fetch.
            idle = DELAY_QUEUE_WAKE_S if self._delay_queue and self.outstanding_message_count else IDLE_WAKE_S
            self.broker.client.blpop([self._doorbell], timeout=idle)
        else:
            capacity = self.broker.capacity
            assert capacity is not None
            if capacity.free > 0:
                time.sleep(IN_FLIGHT_WAIT_S)  # the room is held by messages about to take their slots
            else:
                capacity.wait_for_room(IDLE_WAKE_S)


def make_broker(
    settings: Settings, *, middleware: Sequence[Any] | None = None, capacity: Capacity | None = None
) -> DoorbellRedisBroker:
    return DoorbellRedisBroker(
        client=sync_redis_client(settings),
        namespace=Keys(settings.key_prefix).dramatiq_namespace(),
        middleware=list(middleware) if middleware is not None else [],
        capacity=capacity,
        run_queues=Tiers(settings).queues(),
        aging_s=settings.priority_aging_s,
    )
