"""User tiers: who goes first when workers are saturated, and what each tier may do (docs/tiers.md).

Pure: no I/O. ``CHATGW_TIERS`` lists the tiers from the lowest priority to the highest (default
``free,pro``); ``CHATGW_DEFAULT_TIER`` is the tier of a user whose token names none. Each tier has its
own Dramatiq queue (:func:`shared.keys.run_queue`), and :func:`next_queue` says which queue a worker
with a free slot serves next:

- **Priority.** The oldest run of a higher tier goes before every run of a lower tier that was queued
  less than ``CHATGW_PRIORITY_AGING_S`` (per tier step) before it.
- **Aging.** So a lower tier is never starved: a run counts as queued ``CHATGW_PRIORITY_AGING_S`` later
  per tier step below the top, and the earliest by that count goes first. A free run that has waited
  30 s longer than the oldest pro run (the default) goes ahead of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.keys import run_queue

if TYPE_CHECKING:
    from shared.settings import Settings

# A tier name ends up in queue names, Redis hashes and Prometheus labels: short and plain.
TIER_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
DEFAULT_TIER = "free"  # the default of CHATGW_DEFAULT_TIER


@dataclass(frozen=True, slots=True)
class TierLimits:
    """A tier's limits: ``CHATGW_TIER_LIMITS`` overrides on top of the global settings."""

    rate_limit_per_minute: int
    rate_limit_burst: int
    max_runs_per_user: int
    max_run_tokens: int
    daily_token_budget: int | None  # tokens per user per UTC day; None: no budget


class Tiers:
    """The deployment's tiers, resolved from settings once per process."""

    def __init__(self, settings: Settings) -> None:
        self.names: tuple[str, ...] = tuple(settings.tiers)  # lowest priority first
        self.default = settings.default_tier
        self.aging_s = settings.priority_aging_s
        budget = settings.daily_token_budget
        self._limits: dict[str, TierLimits] = {}
        for name in self.names:
            overrides = settings.tier_limits.get(name)
            own = overrides.model_dump(exclude_none=True) if overrides is not None else {}
            self._limits[name] = TierLimits(
                rate_limit_per_minute=own.get("rate_limit_per_minute", settings.rate_limit_per_minute),
                rate_limit_burst=own.get("rate_limit_burst", settings.rate_limit_burst),
                max_runs_per_user=own.get("max_runs_per_user", settings.max_runs_per_user),
                max_run_tokens=own.get("max_run_tokens", settings.max_run_tokens),
                daily_token_budget=budget.get(name) if isinstance(budget, dict) else budget,
            )

    def known(self, tier: str) -> bool:
        return tier in self._limits

    def resolve(self, tier: str | None) -> str:
        """``tier`` when it is one of ours, else the default (a run created under older settings)."""
        return tier if tier is not None and tier in self._limits else self.default

    def limits(self, tier: str | None) -> TierLimits:
        return self._limits[self.resolve(tier)]

    def queue(self, tier: str | None) -> str:
        return run_queue(self.resolve(tier))

    def queues(self) -> list[str]:
        """Every tier's queue, highest priority first (the order :func:`next_queue` expects)."""
        return [run_queue(name) for name in reversed(self.names)]


def next_queue(heads_ms: Sequence[int | None], aging_ms: float) -> int | None:
    """The queue a free slot serves next, or None when every queue is empty.

    ``heads_ms[i]`` is when the oldest message of queue ``i`` was enqueued (Unix ms), queues ordered
    highest priority first; None for an empty queue. Queue ``i``'s head counts as enqueued
    ``i * aging_ms`` later; the earliest goes first, and a tie goes to the higher tier.
    """
    best: int | None = None
    best_at = 0.0
    for rank, head in enumerate(heads_ms):
        if head is None:
            continue
        at = head + rank * aging_ms
        if best is None or at < best_at:
            best, best_at = rank, at
    return best


def parse_dev_token(token: str) -> tuple[str, str | None] | None:
    """``dev:<user>`` → (user, None); ``dev:<user>:<tier>`` → (user, tier); anything else → None.
    The user and tier are returned unchecked."""
    parts = token.split(":")
    if parts[0] != "dev" or len(parts) not in (2, 3):
        return None
    return parts[1], (parts[2] if len(parts) == 3 else None)
