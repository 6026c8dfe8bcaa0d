"""Writes one attempt's events to the run's log, riding out short Redis outages."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared.errors import StoreUnavailable
from shared.runstore import AppendRefused, Claim, RunStore

log = logging.getLogger(__name__)


class RunLost(Exception):
    """This attempt may no longer write: the run ended elsewhere or was handed to another worker."""


class RunEmitter:
    def __init__(self, store: RunStore, claim: Claim, *, outage_budget_s: float = 30.0) -> None:
        self._store = store
        self._claim = claim
        self._outage_budget_s = outage_budget_s
        self._count = 0

    async def emit(self, event_type: str, fields: dict[str, Any] | None = None) -> int:
        claim = self._claim
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._outage_budget_s
        delay = 0.05
        self._count += 1
        event_id = f"{claim.attempt}:{self._count}"
        while True:
            try:
                return await self._store.append(
                    claim.run_id, claim.conversation_id, claim.attempt, event_type, fields, event_id=event_id
                )
            except AppendRefused as exc:
                raise RunLost(f"run {claim.run_id}: {exc.reason}") from None
            except StoreUnavailable:
                # Safe to retry: the event id makes the append idempotent if the first try did land.
                if loop.time() >= deadline:
                    raise
                log.warning("Redis unavailable; retrying %s for run %s", event_type, claim.run_id)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
