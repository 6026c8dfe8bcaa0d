"""How a run goes from a Dramatiq message to its terminal event.

:func:`admit_run` is all the actor does: take a slot, claim the run, start its task on the event loop
and return, so one worker process runs as many runs as it has slots (``CHATGW_WORKER_CONCURRENCY``),
not one per Dramatiq thread. :func:`run_claimed` then streams the agent and writes exactly one
terminal event, or gives the attempt up (the run went elsewhere, or Redis stayed away) and leaves the
run to the lease sweeper, which retries it visibly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from shared import logs
from shared.errors import AgentError, ErrorCode, StoreUnavailable
from shared.protocol import Source
from shared.runstore import Claim, RunWaiting
from worker.agent.graph import AgentResult, stream_agent
from worker.agent.memory import TURN_KEY, TurnInfo, record_partial_turn
from worker.emitter import RunEmitter, RunLost
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

CLAIM_RETRY_S = 20.0  # a claim that keeps failing on Redis for this long fails the message


def _failure(code: str, message: str) -> tuple[str, dict[str, Any]]:
    return "run.failed", {"error": {"code": code, "message": message}}


def describe_failure(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """Map an agent exception to a run.failed event without leaking internals to the client."""
    if isinstance(exc, AgentError):
        return _failure(exc.code, exc.message)
    return _failure(ErrorCode.AGENT_ERROR, "the agent failed while answering")


async def admit_run(rt: WorkerRuntime, run_id: str, waits: int = 0, *, tier: str | None = None) -> None:
    """Claim a run and start it on the loop; returns once it runs (or needs no running here).
    ``tier``: the message's, so a run sent on again stays in its tier's queue."""
    if not rt.accepting:
        await rt.runs.enqueue(run_id, tier=tier, waits=waits)  # draining: another worker takes it
        return
    await rt.take_slot()
    try:
        claim = await _claim(rt, run_id)
    except BaseException:
        rt.release_slot()
        raise
    if isinstance(claim, RunWaiting):
        rt.release_slot()
        # Queued behind its conversation's active run (on_busy=enqueue): look again shortly. The
        # active run's terminal event promotes this one, so the wait ends by itself.
        await rt.runs.enqueue(run_id, tier=tier, delay_ms=min(100 * 2**waits, 2000), waits=min(waits + 1, 10))
        return
    if claim is None:
        rt.release_slot()
        # Stopped while queued, already finished, or taken by another worker: nothing to do.
        log.info("run %s is not queued; skipping", run_id)
        return
    if claim.attempt == 1 and claim.created_at:
        rt.metrics.observe_dispatch(time.time() - claim.created_at)
    rt.start(claim, run_claimed(rt, claim))


async def _claim(rt: WorkerRuntime, run_id: str) -> Claim | RunWaiting | None:
    """Claim, retrying while Redis is unreachable (the claim script is idempotent per attempt)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLAIM_RETRY_S
    delay = 0.05
    while True:
        try:
            return await rt.store.claim(run_id, rt.worker_id, lease_s=rt.settings.run_lease_s)
        except StoreUnavailable:
            if loop.time() >= deadline:
                raise
            log.warning("Redis unavailable; retrying the claim of run %s", run_id)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class TokenBudgetReached(Exception):
    """CHATGW_MAX_RUN_TOKENS tokens were sent: the run completes, marked truncated."""


async def run_claimed(rt: WorkerRuntime, claim: Claim) -> None:
    # This run's own task: its log lines (and the agent's) carry the run from here on.
    logs.bind(run_id=claim.run_id, conversation_id=claim.conversation_id, user=claim.user)
    started = time.monotonic()
    outcome = await _execute_claimed(rt, claim)
    rt.metrics.duration.observe(time.monotonic() - started)
    rt.metrics.runs.labels(outcome).inc()


async def _execute_claimed(rt: WorkerRuntime, claim: Claim) -> str:
    """Returns the outcome: the terminal event written, or 'abandoned' (the run went elsewhere)."""
    run_id = claim.run_id
    emitter = RunEmitter(rt.appender, claim, outage_budget_s=rt.settings.store_outage_budget_s)
    max_tokens = rt.tiers.limits(claim.tier).max_run_tokens
    claimed_at = time.monotonic()
    turn = TurnInfo(run_id=run_id, asked_at=claim.created_at or None)  # stamped on the remembered turn
    config: Any = {"configurable": {"thread_id": claim.conversation_id, TURN_KEY: turn}}

    async def on_sources(sources: list[Source]) -> None:
        # Not awaited: the model starts while the event is on its way (order is kept by the emitter).
        emitter.post("retrieval", {"sources": [s.model_dump() for s in sources]})
        ticket.sources = sources  # cached with the answer

    async def on_token(text: str) -> None:
        # Never splits a token: each one is written whole, and a stop ends the run with exactly the
        # tokens in the log (the emitter flushes them before the terminal event).
        await emitter.token(text)
        if emitter.tokens == 1:
            rt.metrics.observe_first_token(time.monotonic() - claimed_at)
        if emitter.tokens >= max_tokens:
            raise TokenBudgetReached  # ends the agent (and its upstream request) right here

    emitter.post("run.started", {"attempt": claim.attempt})
    ticket = await rt.answers.open(claim, max_tokens)  # a hit replays an earlier answer instead
    agent = asyncio.create_task(
        ticket.replay(on_sources, on_token)
        if ticket.hit is not None
        else stream_agent(rt.graph, claim.content, on_sources=on_sources, on_token=on_token, config=config),
        name=f"agent-{run_id}",
    )
    rt.active[run_id] = agent
    try:
        # A stop that landed between the claim and the registration above is only in the flag.
        if await rt.store.stop_requested(run_id):
            agent.cancel()
        done, _ = await asyncio.wait({agent}, timeout=rt.settings.run_timeout_s)
        if not done:
            agent.cancel()
            await asyncio.wait({agent})
            await _flush_quietly(emitter)
            terminal = _failure(ErrorCode.RUN_TIMEOUT, f"the run exceeded {rt.settings.run_timeout_s:g} s")
        elif agent.cancelled():
            stopped = await _stopped(rt, claim, emitter, config)
            if stopped is None:
                log.info("run %s: cancelled here, not stopped by its user; another attempt takes it", run_id)
                return "abandoned"
            terminal = stopped
        elif (error := agent.exception()) is not None:
            if isinstance(error, RunLost | StoreUnavailable):
                # Fenced out, or Redis away for longer than the outage budget: give the attempt up.
                # Its lease expires and a sweeper retries the run (run.retrying) once Redis is back.
                log.warning("run %s: %s; this attempt stops writing", run_id, error)
                return "abandoned"
            await emitter.flush()
            if isinstance(error, TokenBudgetReached):
                terminal = ("run.completed", {"content": emitter.content, "truncated": True})
                # The graph never reached its own save: keep the (cut) answer in the conversation.
                await record_partial_turn(
                    rt.graph,
                    config,
                    claim.content,
                    emitter.content,
                    stopped=False,
                    budget_chars=rt.settings.history_budget_chars,
                )
            else:
                terminal = describe_failure(error)
                if not isinstance(error, AgentError):
                    log.error("run %s: agent failed", run_id, exc_info=error)
        else:
            await emitter.flush()
            terminal = _completed(agent.result(), emitter.content)
            if ticket.hit is not None:
                await ticket.remember(rt.graph, config, rt.settings.history_budget_chars)
    except (RunLost, StoreUnavailable) as exc:
        agent.cancel()  # may still be running (e.g. the first stop check could not reach Redis)
        log.warning("run %s: %s; this attempt stops writing", run_id, exc)
        return "abandoned"
    except asyncio.CancelledError:
        # The worker itself is shutting down.
        agent.cancel()
        raise
    finally:
        rt.active.pop(run_id, None)
        rt.metrics.tokens.inc(emitter.tokens)  # per run, not per token
    terminal = ticket.terminal(terminal)
    # Before the terminal event: whoever asks next finds the answer, and the budget sees its cost.
    cached = ticket.hit is not None
    await asyncio.gather(
        ticket.store(terminal), rt.billing.bill(claim, terminal, emitter.tokens, cached=cached)
    )
    try:
        await emitter.emit(*terminal)
    except (RunLost, StoreUnavailable) as exc:
        log.warning("run %s: terminal event not written (%s)", run_id, exc)
        return "abandoned"
    if terminal[0] == "run.failed":
        rt.metrics.run_failed(terminal[1]["error"]["code"])
    return terminal[0].removeprefix("run.")


async def _flush_quietly(emitter: RunEmitter) -> None:
    try:
        await emitter.flush()
    except (RunLost, StoreUnavailable):
        raise
    except Exception:
        log.exception("flushing a run's tokens failed")


async def _stopped(
    rt: WorkerRuntime, claim: Claim, emitter: RunEmitter, config: Any
) -> tuple[str, dict[str, Any]] | None:
    """The terminal event of a cancelled run: ``run.stopped`` when its user stopped it; None when
    it was cancelled for any other reason (hand-back, a lost lease): it runs again elsewhere, so
    this attempt leaves neither a stopped copy of itself in the conversation nor a terminal event."""
    await emitter.flush()
    try:
        user_stop = await rt.store.stop_requested(claim.run_id)
    except StoreUnavailable:
        return None  # the lease runs out; the next attempt sees the stop flag and ends the run
    if not user_stop:
        return None
    # Before the terminal event, so the conversation's next turn sees it. Never raises.
    await record_partial_turn(
        rt.graph, config, claim.content, emitter.content, budget_chars=rt.settings.history_budget_chars
    )
    return ("run.stopped", {"content": emitter.content})


def _completed(result: AgentResult, content: str) -> tuple[str, dict[str, Any]]:
    fields: dict[str, Any] = {"content": content}
    if result.usage:
        fields["usage"] = result.usage
    if result.truncated:
        fields["truncated"] = True
    return "run.completed", fields
