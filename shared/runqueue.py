"""Hands a run to the workers through Dramatiq (used by the gateway and by the sweeper)."""

from __future__ import annotations

import asyncio

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import RedisError

from shared.errors import StoreUnavailable
from shared.keys import RUN_ACTOR, RUN_QUEUE


class RunQueue:
    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker

    async def enqueue(self, run_id: str, *, delay_ms: int | None = None, waits: int = 0) -> None:
        """Queue a run for a worker; ``delay_ms``/``waits`` re-check a run waiting behind another."""
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=RUN_QUEUE,
            actor_name=RUN_ACTOR,
            args=(run_id,),
            kwargs={"waits": waits} if waits else {},
            options={},
        )
        try:
            # Dramatiq's broker is synchronous; keep it off the event loop.
            await asyncio.to_thread(self._broker.enqueue, message, delay=delay_ms)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"could not enqueue run: {exc}") from exc

    def close(self) -> None:
        self._broker.close()
