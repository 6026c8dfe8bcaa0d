"""Runs one chat run end to end: claim it, stream the agent, and write exactly one terminal event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from shared.errors import AgentError, ErrorCode, StoreUnavailable
from shared.protocol import Source
from shared.runstore import Claim, RunWaiting
from worker.agent.graph import stream_agent
from worker.agent.memory import record_partial_turn
from worker.emitter import RunEmitter, RunLost
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def _failure(code: str, message: str) -> tuple[str, dict[str, Any]]:
    return "run.failed", {"error": {"code": code, "message": message}}


def describe_failure(exc: BaseException) -> tuple[str, dict[str, Any]]:
    """Map an agent exception to a run.failed event without leaking internals to the client."""
    if isinstance(exc, AgentError):
        return _failure(exc.code, exc.message)
    return _failure(ErrorCode.AGENT_ERROR, "the agent failed while answering")


async def execute_run(rt: WorkerRuntime, run_id: str, waits: int = 0) -> None:
    claim = await rt.store.claim(run_id, rt.worker_id, lease_s=rt.settings.run_lease_s)
    if isinstance(claim, RunWaiting):
        # Queued behind its conversation's active run (on_busy=enqueue): look again shortly. The
        # active run's terminal event promotes this one, so the wait ends by itself.
        await rt.runs.enqueue(run_id, delay_ms=min(100 * 2**waits, 2000), waits=min(waits + 1, 10))
        return
    if claim is None:
        # Stopped while queued, already finished, or taken by another worker: nothing to do.
        log.info("run %s is not queued; skipping", run_id)
        return
    rt.attempts[run_id] = claim.attempt
    try:
        with rt.metrics.duration.time():
            outcome = await _execute_claimed(rt, claim)
        rt.metrics.runs.labels(outcome).inc()
    finally:
        rt.attempts.pop(run_id, None)


class TokenBudgetReached(Exception):
    """CHATGW_MAX_RUN_TOKENS tokens were sent: the run completes, marked truncated."""


async def _execute_claimed(rt: WorkerRuntime, claim: Claim) -> str:
    """Returns the outcome: the terminal event written, or 'abandoned' (the run went elsewhere)."""
    run_id = claim.run_id
    emitter = RunEmitter(rt.store, claim)
    tokens: list[str] = []
    max_tokens = rt.settings.max_run_tokens

    async def on_sources(sources: list[Source]) -> None:
        await emitter.emit("retrieval", {"sources": [s.model_dump() for s in sources]})

    async def on_token(text: str) -> None:
        # A stop must not split a token: the write finishes even when the agent is cancelled
        # meanwhile, so the stopped content is exactly the tokens in the log.
        write = asyncio.ensure_future(emitter.emit("token", {"text": text}))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait({write})
            if write.done() and not write.cancelled() and write.exception() is None:
                tokens.append(text)
            raise
        tokens.append(text)
        rt.metrics.tokens.inc()
        if len(tokens) >= max_tokens:
            raise TokenBudgetReached  # ends the agent (and its upstream request) right here

    try:
        await emitter.emit("run.started", {"attempt": claim.attempt})
    except RunLost:
        return "abandoned"
    agent = asyncio.create_task(
        stream_agent(
            rt.graph,
            claim.content,
            on_sources=on_sources,
            on_token=on_token,
            config={"configurable": {"thread_id": claim.conversation_id}},
        ),
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
            terminal = _failure(ErrorCode.RUN_TIMEOUT, f"the run exceeded {rt.settings.run_timeout_s:g} s")
        elif agent.cancelled():
            terminal = ("run.stopped", {"content": "".join(tokens)})
            # Only a user's stop ends the turn: a run cancelled for hand-back or a lost lease runs again
            # elsewhere and must not leave a stopped copy of itself in the conversation.
            try:
                user_stop = await rt.store.stop_requested(run_id)
            except Exception:
                user_stop = False  # Redis is down; the terminal write below reports it
            if user_stop:
                # Before the terminal event, so the conversation's next turn sees it. Never raises.
                await record_partial_turn(
                    rt.graph,
                    {"configurable": {"thread_id": claim.conversation_id}},
                    claim.content,
                    terminal[1]["content"],
                )
        elif (exc := agent.exception()) is not None:
            if isinstance(exc, RunLost):
                log.warning("run %s: %s; this attempt stops writing", run_id, exc)
                return "abandoned"
            if isinstance(exc, TokenBudgetReached):
                terminal = ("run.completed", {"content": "".join(tokens), "truncated": True})
                # The graph never reached its own save: keep the (cut) answer in the conversation.
                await record_partial_turn(
                    rt.graph,
                    {"configurable": {"thread_id": claim.conversation_id}},
                    claim.content,
                    terminal[1]["content"],
                    stopped=False,
                )
            else:
                terminal = describe_failure(exc)
            if not isinstance(exc, AgentError | TokenBudgetReached):
                log.error("run %s: agent failed", run_id, exc_info=exc)
        else:
            result = agent.result()
            fields: dict[str, Any] = {"content": "".join(tokens)}
            if result.usage:
                fields["usage"] = result.usage
            if result.truncated:
                fields["truncated"] = True
            terminal = ("run.completed", fields)
    except asyncio.CancelledError:
        # The worker itself is shutting down or hit Dramatiq's time limit.
        agent.cancel()
        raise
    finally:
        rt.active.pop(run_id, None)
    try:
        await emitter.emit(*terminal)
    except RunLost as exc:
        log.warning("run %s: terminal event refused (%s)", run_id, exc)
        return "abandoned"
    except StoreUnavailable:
        log.error("run %s: could not write its terminal event; Redis unreachable", run_id)
        raise
    return terminal[0].removeprefix("run.")
