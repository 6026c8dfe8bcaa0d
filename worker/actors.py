"""The Dramatiq actors. Declared on a broker passed in, not at import time."""

from __future__ import annotations

from typing import Any

import dramatiq

from shared.keys import RUN_ACTOR
from worker.execute import admit_run
from worker.middleware import RuntimeMiddleware

# The actor only claims the run and starts it on the event loop; a claim that keeps failing on Redis
# gives up after CLAIM_RETRY_S, well inside this.
ACTOR_TIME_LIMIT_MS = 60_000


def declare_actors(broker: Any, runtime: RuntimeMiddleware, *, default_queue: str) -> None:
    async def run_chat(run_id: str, waits: int = 0, tier: str | None = None) -> None:
        await admit_run(runtime.runtime, run_id, waits, tier=tier)

    declare = dramatiq.actor(
        broker=broker,
        actor_name=RUN_ACTOR,
        # Messages name their tier's queue (shared/runqueue.py); this one is only the actor's home.
        queue_name=default_queue,
        # Retrying a chat run is our decision (the run record knows what the client saw), not
        # Dramatiq's: no blind retries with backoff. A message that fails leaves its run queued, and
        # the sweeper re-sends an unclaimed run's message.
        max_retries=0,
        time_limit=ACTOR_TIME_LIMIT_MS,
    )
    declare(run_chat)
