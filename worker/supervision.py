"""Leases, the orphan sweeper and hand-back: how a run outlives the worker running it.

A worker holds a lease on each run it runs and renews it every ``run_lease_s / 3``. Every worker
also sweeps: a run whose lease expired (its worker was SIGKILLed, paused, or cut off) is handed to
the next attempt — ``run.retrying`` in the run's own sequence, then a fresh Dramatiq message — or,
after ``max_attempts``, ended with ``run.failed`` (worker_lost). The attempt number is bumped in the
same script, so the old attempt is fenced out of the log from that moment on.

A lease that ran out while this sweeper could not reach Redis either (``rt.outages``) was lost to the
store, not to its worker: the reason is then ``store_unavailable``, and so is the failure code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.errors import ErrorCode, StoreUnavailable

if TYPE_CHECKING:
    from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


async def renew_leases(rt: WorkerRuntime) -> None:
    """Renew every lease held here in one round trip."""
    attempts = dict(rt.attempts)
    if not attempts:
        return
    renewed = await rt.store.renew_leases(attempts, lease_s=rt.settings.run_lease_s)
    for run_id, ours in renewed.items():
        # A run that ended while the renewal was on its way is no longer ours either: not a loss.
        if not ours and rt.attempts.get(run_id) == attempts[run_id]:
            # Someone else owns the run now (we were too slow, or paused): stop working on it.
            log.warning("run %s attempt %d lost its lease; abandoning it", run_id, attempts[run_id])
            rt.cancel_run(run_id)


async def sweep_orphans(rt: WorkerRuntime) -> int:
    """Re-queue runs whose lease expired. Returns how many were handed on or failed."""
    handled = 0
    for run_id, deadline in await rt.store.expired_leases():
        lost_to_store = rt.outages.covers(deadline)
        reason = ErrorCode.STORE_UNAVAILABLE if lost_to_store else ErrorCode.WORKER_LOST
        outcome = await rt.store.requeue(
            run_id, max_attempts=rt.settings.max_attempts, resend_after_s=_resend_after(rt), reason=reason
        )
        if outcome in ("retry", "resend"):
            log.warning("run %s: %s; %s", run_id, reason, "retrying" if outcome == "retry" else "re-sending")
            await rt.runs.enqueue(run_id, tier=await rt.store.tier_of(run_id))  # back to its tier's queue
            rt.metrics.requeued.labels(outcome).inc()
        elif outcome == "failed":
            log.error("run %s: %s, and out of attempts; failed", run_id, reason)
            rt.metrics.run_failed(reason)
        handled += outcome in ("retry", "resend", "failed")
    return handled


async def hand_back(rt: WorkerRuntime) -> None:
    """Shutdown: give every run still running here to another worker, visibly (run.retrying)."""
    for run_id in list(rt.attempts):
        try:
            outcome = await rt.store.requeue(
                run_id,
                max_attempts=rt.settings.max_attempts,
                resend_after_s=_resend_after(rt),
                force=True,
                reason="worker_shutdown",
            )
            if outcome in ("retry", "resend"):
                await rt.runs.enqueue(run_id, tier=await rt.store.tier_of(run_id))
                rt.metrics.requeued.labels("hand_back").inc()
            elif outcome == "failed":
                rt.metrics.run_failed(ErrorCode.WORKER_LOST)
            log.info("run %s handed back (%s)", run_id, outcome)
        except StoreUnavailable:
            # Its lease will expire and a sweeper elsewhere will do the same.
            log.warning("run %s: could not hand back; its lease will expire", run_id)
        rt.cancel_run(run_id)


def _resend_after(rt: WorkerRuntime) -> float:
    return rt.settings.unclaimed_grace_s
