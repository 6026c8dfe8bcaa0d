"""Conversations' pure parts: titles, page cursors, the on_busy choice, turns as memory stores them."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver

from shared.conversations import TITLE_CHARS, PageCursor, conversation_title
from shared.errors import ErrorCode, OnBusyNotAllowed
from shared.protocol import ChatFrame, OnBusy, Source, choose_on_busy
from shared.transcript import answer_message, is_stopped, question_message, read_turns, turns_of
from worker.agent import OfflineChatModel, build_graph, stream_agent
from worker.agent.memory import (
    TURN_KEY,
    TurnInfo,
    record_partial_turn,
    remember_turn,
    select_history,
    stopped_answer,
)


async def _ignore(_: Any) -> None:
    return None


# ---------------------------------------------------------------- titles


def test_a_short_question_is_its_own_title_on_one_line() -> None:
    assert conversation_title("  How does\n resume\twork?  ") == "How does resume work?"


def test_a_long_question_is_cut_at_a_word_with_an_ellipsis() -> None:
    question = "Why " + "does the gateway keep every event of every run in a Redis stream " * 3
    title = conversation_title(question)
    assert len(title) <= TITLE_CHARS and title.endswith("…")
    assert question.startswith(title[:-1]) and not title[:-1].endswith(" ")
    assert question[len(title) - 1] == " ", "cut between words"


def test_a_long_word_is_cut_anywhere() -> None:
    assert conversation_title("x" * 500) == "x" * (TITLE_CHARS - 1) + "…"


# ---------------------------------------------------------------- cursors


@given(
    score=st.floats(min_value=0, max_value=2e10, allow_nan=False),
    conversation_id=st.from_regex(r"^[A-Za-z0-9_-]{1,64}$", fullmatch=True),
)
def test_cursors_round_trip(score: float, conversation_id: str) -> None:
    cursor = PageCursor(score, conversation_id)
    assert PageCursor.decode(cursor.encode()) == cursor


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "zzz",
        "not base64!",
        "a" * 201,
        _b64("1.5"),
        _b64("nan|abc"),
        _b64("inf|abc"),
        _b64("soon|abc"),
        _b64("1.5|"),
        _b64("1.5|bad id"),
        _b64("1.5|" + "a" * 65),
        base64.urlsafe_b64encode(b"\xff\xfe|abc").decode(),
    ],
)
def test_anything_else_is_not_a_cursor(text: str) -> None:
    with pytest.raises(ValueError):
        PageCursor.decode(text)


# ---------------------------------------------------------------- on_busy


def chat(on_busy: OnBusy | None) -> ChatFrame:
    return ChatFrame(type="chat", content="q", id="c-1", on_busy=on_busy)


@pytest.mark.parametrize("default", ["reject", "interrupt", "enqueue"])
def test_no_choice_is_the_servers_default(default: OnBusy) -> None:
    assert choose_on_busy(chat(None), default=default, allowed=[]) == default


def test_an_allowed_choice_overrides_the_default() -> None:
    allowed: list[OnBusy] = ["interrupt", "enqueue"]
    assert choose_on_busy(chat("interrupt"), default="reject", allowed=allowed) == "interrupt"
    assert choose_on_busy(chat("enqueue"), default="reject", allowed=allowed) == "enqueue"


def test_the_default_may_always_be_named() -> None:
    assert choose_on_busy(chat("enqueue"), default="enqueue", allowed=[]) == "enqueue"


def test_a_refused_choice_is_a_frame_error_naming_what_is_allowed() -> None:
    with pytest.raises(OnBusyNotAllowed) as refused:
        choose_on_busy(chat("interrupt"), default="reject", allowed=["enqueue"])
    assert refused.value.code == ErrorCode.ON_BUSY_NOT_ALLOWED
    assert refused.value.ref == "c-1"
    assert "enqueue, reject" in refused.value.message


# ---------------------------------------------------------------- turns


def test_turns_carry_their_run_times_sources_and_stop_mark() -> None:
    sources = [{"id": "a.md#1", "title": "A", "snippet": "alpha"}]
    messages = [
        question_message("q1", run_id="r1", asked_at=10.0),
        answer_message(
            AIMessage(content="a1"), run_id="r1", answered_at=11.0, sources=sources, stopped=False
        ),
        question_message("q2", run_id="r2", asked_at=12.0),
        answer_message(stopped_answer("a2 par"), run_id="r2", answered_at=13.0, sources=[], stopped=True),
    ]
    first, second = turns_of(messages)
    assert (first.run_id, first.question, first.answer, first.stopped) == ("r1", "q1", "a1", False)
    assert (first.asked_at, first.answered_at, first.sources) == (10.0, 11.0, sources)
    assert (second.run_id, second.answer, second.stopped) == ("r2", "a2 par", True)
    assert is_stopped(messages[3])


def test_turns_stored_before_runs_were_recorded_still_read() -> None:
    lone = AIMessage(content="greeting")
    messages = [lone, HumanMessage(content="q1"), AIMessage(content="a1"), HumanMessage(content="q2")]
    first, second = turns_of(messages)
    assert (first.run_id, first.asked_at, first.answered_at, first.sources) == (None, None, None, [])
    assert (first.question, first.answer) == ("q1", "a1")
    assert (second.question, second.answer, second.stopped) == ("q2", "", False)


def test_malformed_sources_are_dropped_not_fatal() -> None:
    answer = AIMessage(
        content="a", response_metadata={"chatgw_sources": [{"id": "x"}, "junk", {"title": "t"}]}
    )
    (turn,) = turns_of([HumanMessage(content="q"), answer])
    assert turn.sources == [{"id": "x", "title": "", "snippet": ""}]


def _stored(*pairs: tuple[str, str]) -> list[HumanMessage | AIMessage]:
    out: list[HumanMessage | AIMessage] = []
    for i, (question, answer) in enumerate(pairs):
        out += [HumanMessage(content=question, id=f"h{i}"), AIMessage(content=answer, id=f"a{i}")]
    return out


def test_remembering_a_turn_forgets_the_turns_no_later_turn_can_be_sent() -> None:
    stored = _stored(("q0", "a" * 10), ("q1", "b" * 10), ("q2", "c" * 10))  # 12 chars a turn
    update = remember_turn(
        stored,
        "q3",
        AIMessage(content="d" * 10),
        turn=TurnInfo("r3", 5.0),
        sources=[],
        stopped=False,
        budget_chars=36,
    )
    removed = [m.id for m in update if isinstance(m, RemoveMessage)]
    assert removed == ["h0", "a0"], "three turns fit: q1, q2 and the new one"
    question, answer = [m for m in update if not isinstance(m, RemoveMessage)]
    assert question.text == "q3" and answer.text == "d" * 10
    (turn,) = turns_of([question, answer])
    assert turn.run_id == "r3" and turn.asked_at == 5.0 and turn.answered_at is not None
    kept = [m for m in stored if m.id not in removed] + [question, answer]
    assert select_history(kept, 36) == kept, "what is kept is exactly what the next turn is sent"


def test_the_newest_turn_is_kept_even_beyond_the_budget() -> None:
    stored = _stored(("q0", "a0"))
    update = remember_turn(
        stored, "q1", AIMessage(content="x" * 100), turn=TurnInfo(), sources=[], stopped=False, budget_chars=0
    )
    assert [m.id for m in update if isinstance(m, RemoveMessage)] == ["h0", "a0"]
    assert [m.text for m in update if not isinstance(m, RemoveMessage)] == ["q1", "x" * 100]


# ---------------------------------------------------------------- through the graph


class OneSource:
    async def retrieve(self, question: str, k: int) -> list[Source]:
        return [Source(id="resume.md#2", title="Resuming", snippet=f"about {question}")]


async def test_the_transcript_is_read_back_from_memory_with_sources_for_both_kinds_of_turn() -> None:
    memory = InMemorySaver()
    graph = build_graph(OfflineChatModel(token_delay_s=0.01), OneSource(), checkpointer=memory)
    first = TurnInfo(run_id="r1", asked_at=100.0)
    config: RunnableConfig = {"configurable": {"thread_id": "c", TURN_KEY: first}}
    answer = await stream_agent(graph, "first?", on_sources=_ignore, on_token=_ignore, config=config)

    # A stopped run: cancelled mid-answer, then recorded the way the worker records it.
    second = TurnInfo(run_id="r2", asked_at=200.0)
    config = {"configurable": {"thread_id": "c", TURN_KEY: second}}
    tokens: list[str] = []
    streaming = asyncio.Event()

    async def on_token(text: str) -> None:
        tokens.append(text)
        streaming.set()

    task = asyncio.create_task(
        stream_agent(graph, "second?", on_sources=_ignore, on_token=on_token, config=config)
    )
    await asyncio.wait_for(streaming.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await record_partial_turn(graph, config, "second?", "".join(tokens))

    one, two = await read_turns(memory, "c")
    assert (one.run_id, one.question, one.answer, one.stopped, one.asked_at) == (
        "r1",
        "first?",
        answer.content,
        False,
        100.0,
    )
    assert one.sources == [{"id": "resume.md#2", "title": "Resuming", "snippet": "about first?"}]
    assert (two.run_id, two.answer, two.stopped, two.asked_at) == ("r2", "".join(tokens), True, 200.0)
    assert two.sources == [{"id": "resume.md#2", "title": "Resuming", "snippet": "about second?"}]
    assert one.answered_at is not None and two.answered_at is not None and one.answered_at <= two.answered_at
    assert await read_turns(memory, "never-used") == []
