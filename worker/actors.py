"""The Dramatiq actors. Declared on a broker passed in, not at import time."""

from __future__ import annotations

from typing import Any

import dramatiq

from shared.keys import RUN_ACTOR, RUN_QUEUE
from worker.execute import admit_run
from worker.middleware import RuntimeMiddleware

# The actor only claims the run and starts it on the event loop; a claim that keeps failing on Redis
# gives up after CLAIM_RETRY_S, well inside this.
ACTOR_TIME_LIMIT_MS = 60_000


def declare_actors(broker: Any, runtime: RuntimeMiddleware) -> None:
    async def run_chat(run_id: str, waits: int = 0) -> None:
        await admit_run(runtime.runtime, run_id, waits)

    declare = dramatiq.actor(
        broker=broker,
        actor_name=RUN_ACTOR,
        queue_name=RUN_QUEUE,
        # Retrying a chat run is our decision (the run record knows what the client saw), not
        # Dramatiq's: no blind retries with backoff. A message that fails leaves its run queued, and
        # the sweeper re-sends an unclaimed run's message.
        max_retries=0,
        time_limit=ACTOR_TIME_LIMIT_MS,
    )
    declare(run_chat)
