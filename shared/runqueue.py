"""Hands a run to the workers through Dramatiq (used by the gateway, the worker and its sweeper).

The message is enqueued exactly as Dramatiq's Redis broker enqueues it — its message encoding, its
own ``dispatch.lua`` with the same arguments — but from the asyncio client, in one round trip that
also rings the broker's doorbell (:mod:`shared.broker`). The broker's ``enqueue`` is synchronous: it
would cost a thread hop and two round trips on the path of every chat.

Each tier has its own queue (``chat-runs.<tier>``, shared/tiers.py): a run goes to its user's tier's
queue, and its message carries the tier, so a worker that sends it again keeps it there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import dramatiq
from dramatiq.common import dq_name
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from shared.broker import DOORBELL_MAX_RINGS, DoorbellRedisBroker
from shared.errors import StoreUnavailable
from shared.keys import RUN_ACTOR
from shared.tiers import Tiers


class RunQueue:
    def __init__(self, broker: DoorbellRedisBroker, redis: Redis, tiers: Tiers) -> None:
        self._broker = broker
        self._tiers = tiers
        self._redis = redis
        self._dispatch = redis.register_script(broker.scripts["dispatch"].script)
        self._max_unpack: int | None = None

    async def enqueue(
        self, run_id: str, *, tier: str | None, delay_ms: int | None = None, waits: int = 0
    ) -> None:
        """Queue a run for a worker, on its tier's queue (an unknown tier: the default's);
        ``delay_ms``/``waits`` re-check a run waiting behind another."""
        tier = self._tiers.resolve(tier)
        queue_name = self._tiers.queue(tier)
        options: dict[str, Any] = {"redis_message_id": str(uuid.uuid4())}
        if delay_ms is not None:
            queue_name = dq_name(queue_name)
            options["eta"] = int(time.time() * 1000) + delay_ms
        kwargs: dict[str, Any] = {"tier": tier}
        if waits:
            kwargs["waits"] = waits
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=queue_name,
            actor_name=RUN_ACTOR,
            args=(run_id,),
            kwargs=kwargs,
            options=options,
        )
        try:
            await self._send(queue_name, options["redis_message_id"], message.encode())
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"could not enqueue run: {exc}") from exc

    async def _send(self, queue_name: str, message_id: str, data: bytes) -> None:
        broker = self._broker
        if self._max_unpack is None:
            # Dramatiq probes the server's Lua stack once per process (a blocking call): off the loop.
            self._max_unpack = int(await asyncio.to_thread(broker._max_unpack_size))
        doorbell = broker.doorbell(queue_name)
        pipe = self._redis.pipeline(transaction=False)
        # The arguments of RedisBroker._dispatch("enqueue") (dramatiq/brokers/redis.py), in order.
        pipe.evalsha(
            self._dispatch.sha,
            1,
            broker.namespace,
            "enqueue",
            int(time.time() * 1000),
            queue_name,
            broker.broker_id,
            broker.heartbeat_timeout,
            broker.dead_message_ttl,
            0,  # no queue maintenance on the gateway's path; workers do it
            self._max_unpack,
            message_id,
            data,
        )
        pipe.lpush(doorbell, 1)
        pipe.ltrim(doorbell, 0, DOORBELL_MAX_RINGS - 1)
        try:
            await pipe.execute()
        except NoScriptError:
            # The pipeline stopped at the script: nothing was enqueued. Load it and send again.
            self._dispatch.sha = await self._redis.script_load(self._dispatch.script)
            await self._send(queue_name, message_id, data)

    def close(self) -> None:
        self._broker.close()
