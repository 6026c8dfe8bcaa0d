"""What a run cost its user: billed to their daily usage (shared/usage.py) before its terminal event.

A run is billed the prompt and completion tokens its model reported (``run.completed.usage``; the
offline model reports word counts). A run that ended without a report — stopped, cut at its tier's
``max_run_tokens``, failed mid-answer — is billed the tokens it streamed, which the provider charged
too. A cached answer costs nothing. Billing comes before the terminal event, so a client that reads
``run.completed`` and asks again is already measured against its budget; a run that crosses the
budget still finishes (the next chat is refused, at the gateway).
"""

from __future__ import annotations

import logging
from typing import Any

from shared.errors import StoreUnavailable
from shared.runstore import Claim
from shared.tiers import Tiers
from shared.usage import UsageLedger
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


def billed_tokens(event: tuple[str, dict[str, Any]], streamed: int, *, cached: bool) -> int:
    """The tokens a run's terminal event bills (``streamed``: tokens the model sent this attempt)."""
    if cached:
        return 0
    usage = event[1].get("usage")
    if isinstance(usage, dict):
        return int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))
    return streamed


class Billing:
    def __init__(self, ledger: UsageLedger, tiers: Tiers, metrics: WorkerMetrics) -> None:
        self._ledger = ledger
        self._tiers = tiers
        self._metrics = metrics

    async def bill(
        self, claim: Claim, event: tuple[str, dict[str, Any]], streamed: int, *, cached: bool
    ) -> None:
        """Never raises: the answer matters more than its bill (a lost bill is logged)."""
        tokens = billed_tokens(event, streamed, cached=cached)
        if tokens <= 0:
            return
        # Per tier, never per user: a label per user would grow without bound.
        self._metrics.billed_tokens.labels(self._tiers.resolve(claim.tier)).inc(tokens)
        try:
            await self._ledger.add(claim.user, tokens)
        except StoreUnavailable as exc:
            log.warning("run %s: %d tokens not billed to %s (%s)", claim.run_id, tokens, claim.user, exc)
