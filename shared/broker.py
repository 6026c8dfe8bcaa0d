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

DOORBELL_MAX_RINGS = 64  # rings beyond what any fetch can use only cause empty wake-ups
# An idle consumer still wakes this often: it keeps Dramatiq's heartbeat fresh and picks up
# messages that arrive without a ring (Dramatiq re-queueing a dead worker's unacked messages).
IDLE_WAKE_S = 1.0
# The delay queue holds messages until their eta; its consumer must look again soon.
DELAY_QUEUE_WAKE_S = 0.1
# While Redis is unreachable the consumer looks again after this, doubling up to the cap.
RECONNECT_FIRST_S = 0.05
RECONNECT_MAX_S = 1.0

log = logging.getLogger(__name__)


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
    ) -> None:
        super().__init__(client=client, namespace=namespace, middleware=list(middleware))  # type: ignore[no-untyped-call]
        self.capacity = capacity

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
        self._idle_wait_s = DELAY_QUEUE_WAKE_S if self._delay_queue else IDLE_WAKE_S
        self._reconnect_s = 0.0  # > 0 while Redis is unreachable

    def _room(self) -> int:
        """How many messages to fetch now."""
        capacity = self.broker.capacity
        if capacity is None or self._delay_queue:
            return int(self.prefetch) - int(self.outstanding_message_count)
        # Messages handed to the worker but not yet claimed count too, so a burst is not overfetched.
        return capacity.free - int(self.outstanding_message_count)

    def __next__(self) -> MessageProxy | None:
        try:
            if not self.message_cache:
                room = self._room()
                if room > 0:
                    self.message_cache = self.broker.do_fetch(self.queue_name, room)
                    self._reconnect_s = 0.0
                if not self.message_cache:
                    self._wait(room > 0)
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

    def _wait(self, has_room: bool) -> None:
        if has_room:
            # Wakes at once when a message is enqueued; a ring that finds nothing costs one fetch.
            self.broker.client.blpop([self._doorbell], timeout=self._idle_wait_s)
        else:
            capacity = self.broker.capacity
            assert capacity is not None
            capacity.wait_for_room(self._idle_wait_s)


def make_broker(
    settings: Settings, *, middleware: Sequence[Any] | None = None, capacity: Capacity | None = None
) -> DoorbellRedisBroker:
    return DoorbellRedisBroker(
        client=sync_redis_client(settings),
        namespace=Keys(settings.key_prefix).dramatiq_namespace(),
        middleware=list(middleware) if middleware is not None else [],
        capacity=capacity,
    )
