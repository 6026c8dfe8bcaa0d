"""The Dramatiq actors. Declared on a broker passed in, not at import time."""

from __future__ import annotations

from typing import Any

import dramatiq

from shared.keys import RUN_ACTOR, RUN_QUEUE
from shared.settings import Settings
from worker.execute import execute_run
from worker.middleware import RuntimeMiddleware


def declare_actors(broker: Any, runtime: RuntimeMiddleware, settings: Settings) -> None:
    async def run_chat(run_id: str, waits: int = 0) -> None:
        await execute_run(runtime.runtime, run_id, waits)

    declare = dramatiq.actor(
        broker=broker,
        actor_name=RUN_ACTOR,
        queue_name=RUN_QUEUE,
        # Retrying a chat run is our decision (the run record knows what the client saw), not
        # Dramatiq's: no blind retries with backoff.
        max_retries=0,
        # Our own timeout ends the run with run.failed; Dramatiq's limit is only a backstop.
        time_limit=int((settings.run_timeout_s + 30) * 1000),
    )
    declare(run_chat)
