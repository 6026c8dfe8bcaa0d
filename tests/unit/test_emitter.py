"""The run emitter's ordering, coalescing and outage rules, against an appender we drive by hand."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from shared.errors import StoreUnavailable
from shared.runstore import AppendRefused, AppendRequest, Claim
from worker.emitter import RunEmitter, RunLost

CLAIM = Claim(run_id="r1", attempt=2, user="u", conversation_id="c1", content="q")


class ManualAppender:
    """Holds every append until the test resolves it, like a Redis that answers when told to."""

    def __init__(self) -> None:
        self.pending: list[tuple[AppendRequest, asyncio.Future[object]]] = []
        self.log: list[dict[str, object]] = []

    def submit(self, request: AppendRequest) -> asyncio.Future[object]:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.pending.append((request, future))
        return future

    async def answer(self, outcome: object | None = None) -> AppendRequest:
        """Answer the oldest append (with its seq unless ``outcome`` is given) and let callbacks run."""
        request, future = self.pending.pop(0)
        if outcome is None:
            self.log.append(orjson.loads(request.body))
            outcome = len(self.log)
        future.set_result(outcome)
        await asyncio.sleep(0)
        return request


def texts(log: list[dict[str, object]]) -> list[object]:
    return [e.get("text", e["type"]) for e in log]


async def test_a_token_leaves_at_once_and_later_ones_are_joined_while_it_is_on_its_way() -> None:
    appender = ManualAppender()
    emitter = RunEmitter(appender, CLAIM)  # type: ignore[arg-type]
    await emitter.token("a ")
    assert len(appender.pending) == 1  # no waiting when nothing is in flight
    await emitter.token("b ")
    await emitter.token("c")
    assert len(appender.pending) == 1  # held back: the first is still on its way
    await appender.answer()
    assert len(appender.pending) == 1  # "b c" left together
    await appender.answer()
    assert texts(appender.log) == ["a ", "b c"]
    assert emitter.content == "a b c" and emitter.tokens == 3


async def test_events_keep_their_place_between_tokens() -> None:
    appender = ManualAppender()
    emitter = RunEmitter(appender, CLAIM)  # type: ignore[arg-type]
    emitter.post("run.started", {"attempt": 2})
    await emitter.token("x ")
    emitter.post("retrieval", {"sources": []})
    await emitter.token("y ")
    await emitter.token("z")
    flushed = asyncio.ensure_future(emitter.flush())
    while appender.pending:
        await appender.answer()
    await flushed
    assert texts(appender.log) == ["run.started", "x ", "retrieval", "y z"]
    assert [e["type"] for e in appender.log] == ["run.started", "token", "retrieval", "token"]


async def test_every_event_has_its_own_id_and_the_claims_attempt() -> None:
    appender = ManualAppender()
    emitter = RunEmitter(appender, CLAIM)  # type: ignore[arg-type]
    emitter.post("run.started", {"attempt": 2})
    await emitter.token("x")
    ids = []
    while appender.pending:
        ids.append((await appender.answer()).event_id)
    assert ids == ["2:1", "2:2"]


async def test_an_outage_is_retried_with_the_same_event_id() -> None:
    appender = ManualAppender()
    emitter = RunEmitter(appender, CLAIM, outage_budget_s=5)  # type: ignore[arg-type]
    await emitter.token("a")
    first = await appender.answer(StoreUnavailable("down"))
    async with asyncio.timeout(2):
        while not appender.pending:  # the retry comes after a short backoff
            await asyncio.sleep(0.01)
    retried = await appender.answer()
    assert retried == first and emitter.content == "a"


async def test_an_outage_longer_than_the_budget_stops_the_attempt() -> None:
    appender = ManualAppender()
    emitter = RunEmitter(appender, CLAIM, outage_budget_s=0)  # type: ignore[arg-type]
    await emitter.token("a")
    await appender.answer(StoreUnavailable("down"))
    with pytest.raises(StoreUnavailable):
        await emitter.token("b")
    with pytest.raises(StoreUnavailable):
        await emitter.flush()
    assert emitter.content == ""


async def test_a_refused_append_means_the_run_went_elsewhere() -> None:
    appender = ManualAppender()
    emitter = RunEmitter(appender, CLAIM)  # type: ignore[arg-type]
    await emitter.token("a")
    await emitter.token("b")
    await appender.answer(AppendRefused("stale_attempt"))
    assert not appender.pending  # nothing more is sent for a fenced attempt
    with pytest.raises(RunLost):
        await emitter.emit("run.completed", {"content": ""})
