"""Runs one chat run end to end: claim it, stream the agent, and write exactly one terminal event."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared.errors import AgentError, ErrorCode, StoreUnavailable
from shared.protocol import Source
from shared.runstore import Claim
from worker.agent.graph import stream_agent
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


async def execute_run(rt: WorkerRuntime, run_id: str) -> None:
    claim = await rt.store.claim(run_id, rt.worker_id, lease_s=rt.settings.run_lease_s)
    if claim is None:
        # Stopped while queued, already finished, or taken by another worker: nothing to do.
        log.info("run %s is not queued; skipping", run_id)
        return
    rt.attempts[run_id] = claim.attempt
    try:
        await _execute_claimed(rt, claim)
    finally:
        rt.attempts.pop(run_id, None)


class TokenBudgetReached(Exception):
    """CHATGW_MAX_RUN_TOKENS tokens were sent: the run completes, marked truncated."""


async def _execute_claimed(rt: WorkerRuntime, claim: Claim) -> None:
    run_id = claim.run_id
    emitter = RunEmitter(rt.store, claim)
    tokens: list[str] = []
    max_tokens = rt.settings.max_run_tokens

    async def on_sources(sources: list[Source]) -> None:
        await emitter.emit("retrieval", {"sources": [s.model_dump() for s in sources]})

    async def on_token(text: str) -> None:
        tokens.append(text)
        await emitter.emit("token", {"text": text})
        if len(tokens) >= max_tokens:
            raise TokenBudgetReached  # ends the agent (and its upstream request) right here

    try:
        await emitter.emit("run.started", {"attempt": claim.attempt})
    except RunLost:
        return
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
        elif (exc := agent.exception()) is not None:
            if isinstance(exc, RunLost):
                log.warning("run %s: %s; this attempt stops writing", run_id, exc)
                return
            if isinstance(exc, TokenBudgetReached):
                terminal = ("run.completed", {"content": "".join(tokens), "truncated": True})
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
    except StoreUnavailable:
        log.error("run %s: could not write its terminal event; Redis unreachable", run_id)
        raise
