"""Helpers shared by the test_core_* integration modules (this module holds no tests itself)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from client import ChatgwConnection, RunTranscript
from shared.testing.stack import Gateway, Proc, Stack, wait_for

SLOW_MS = "30"  # token delay that leaves a run in flight for about a second
TERMINAL = frozenset({"run.completed", "run.stopped", "run.failed"})


class WireConnection(ChatgwConnection):
    """A ChatgwConnection that also records every frame in the order it came off the wire."""

    def __init__(self, ws: Any) -> None:
        self.wire: list[dict[str, Any]] = []
        super().__init__(ws)

    async def __aenter__(self) -> WireConnection:
        return self

    def _dispatch(self, frame: dict[str, Any]) -> None:
        self.wire.append(frame)
        super()._dispatch(frame)


async def connect(
    stack: Stack, user: str = "alice", *, gateway: int = 0, header_auth: bool = True
) -> WireConnection:
    conn = await WireConnection.open(stack.gateways[gateway].url, f"dev:{user}", header_auth=header_auth)
    assert isinstance(conn, WireConnection)
    return conn


async def open_raw(stack: Stack, token: str | None = None, *, header_auth: bool = True) -> WireConnection:
    conn = await WireConnection.open(stack.gateways[0].url, token, header_auth=header_auth)
    assert isinstance(conn, WireConnection)
    return conn


def _worker_up(worker: Proc) -> bool:
    return "ready (concurrency" in worker.output() or not worker.alive()


def _gateway_up(gateway: Gateway) -> bool:
    return gateway.ready() or not gateway.alive()


def start(stack: Stack, *, workers: int = 1, gateways: int = 1, **settings: str) -> Stack:
    """Start processes with extra settings, in parallel (the stack fixtures start them one by one)."""
    stack.settings.update(settings)
    procs = [stack.start_worker(wait=False) for _ in range(workers)]
    gws = [stack.start_gateway(wait=False) for _ in range(gateways)]
    for w in procs:
        wait_for(functools.partial(_worker_up, w), timeout=30, what="worker boot")
        assert w.alive(), w.output()
    for g in gws:
        wait_for(functools.partial(_gateway_up, g), timeout=30, what="gateway ready")
        assert g.alive(), g.output()
    return stack


async def eventually(
    condition: Callable[[], Awaitable[bool] | bool], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Async twin of stack.wait_for: poll a (possibly async) condition without blocking the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or condition}")
        await asyncio.sleep(0.02)


async def quiesce(conn: ChatgwConnection) -> None:
    """Round-trip a ping so frames the gateway queued before the pong have been read."""
    ref = f"q{id(conn) % 100000}"
    await conn.send({"type": "ping", "id": ref})
    reply = await conn.reply(5)
    assert reply == {"type": "pong", "id": ref}, reply


def no_more_events(conn: ChatgwConnection, run_id: str) -> bool:
    queue = conn.runs.get(run_id)
    return queue is None or queue.empty()


async def replay(
    conn: ChatgwConnection, run_id: str, after_seq: int = 0, timeout: float = 10.0
) -> RunTranscript:
    await conn.resume(run_id, after_seq)
    return await conn.follow(run_id, timeout=timeout)


def assert_well_formed(transcript: RunTranscript, *, first_seq: int = 1) -> None:
    """Contiguous seqs from first_seq, exactly one terminal event (the last one), consistent ids."""
    events = transcript.events
    assert events, "no events"
    assert transcript.seqs == list(range(first_seq, first_seq + len(events))), transcript.seqs
    assert [e["type"] in TERMINAL for e in events].count(True) == 1
    assert events[-1]["type"] in TERMINAL
    assert {e["run_id"] for e in events} == {transcript.run_id}
    assert len({e["conversation_id"] for e in events}) == 1


def normalize(frame: dict[str, Any], *ids: str) -> dict[str, Any]:
    """The frame with the given identifiers replaced by a placeholder (to compare two error frames)."""
    text = orjson.dumps(frame).decode()
    for ident in ids:
        text = re.sub(re.escape(ident), "<ID>", text)
    return dict(orjson.loads(text))


async def close_quietly(*conns: ChatgwConnection) -> None:
    for conn in conns:
        with contextlib.suppress(Exception):
            await conn.close()
