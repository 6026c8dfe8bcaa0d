"""Conversation memory: the history budget, stopped answers, recording a stopped turn, the SQLite store."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver

from shared.settings import load_settings
from worker.agent import NullRetriever, OfflineChatModel, build_graph, stream_agent
from worker.agent.memory import (
    STATUS_KEY,
    STOPPED,
    STOPPED_SUFFIX,
    for_model,
    is_stopped,
    open_checkpointer,
    record_partial_turn,
    select_history,
    split_turns,
    stopped_answer,
)
from worker.agent.offline import compose_answer, previous_turn


def turn(question: str, answer: str) -> list[BaseMessage]:
    return [HumanMessage(content=question), AIMessage(content=answer)]


def texts(messages: list[BaseMessage]) -> list[str]:
    return [m.text for m in messages]


class PromptRecorder(AsyncCallbackHandler):
    """The messages each model call received."""

    def __init__(self) -> None:
        self.prompts: list[list[BaseMessage]] = []

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.prompts.extend(messages)


async def ask(graph: Any, question: str, config: RunnableConfig) -> str:
    async def ignore(_: Any) -> None:
        return None

    return (await stream_agent(graph, question, on_sources=ignore, on_token=ignore, config=config)).content


def thread(name: str, *callbacks: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": name}, "callbacks": list(callbacks)}


# ---------------------------------------------------------------- budget and conversion


def test_turns_group_each_question_with_its_answers() -> None:
    lone = AIMessage(content="greeting")
    messages = [lone, *turn("q1", "a1"), HumanMessage(content="q2")]
    assert [texts(t) for t in split_turns(messages)] == [["greeting"], ["q1", "a1"], ["q2"]]
    assert split_turns([]) == []


def test_budget_keeps_the_newest_whole_turns() -> None:
    history = [*turn("q1", "a" * 10), *turn("q2", "b" * 10), *turn("q3", "c" * 10)]  # 12 chars a turn
    assert texts(select_history(history, 10_000)) == texts(history)
    assert texts(select_history(history, 36)) == texts(history)
    assert texts(select_history(history, 35)) == ["q2", "b" * 10, "q3", "c" * 10]
    assert texts(select_history(history, 24)) == ["q2", "b" * 10, "q3", "c" * 10]
    assert texts(select_history(history, 23)) == ["q3", "c" * 10]
    assert select_history(history, 11) == []
    assert select_history(history, 0) == []
    assert select_history([], 100) == []


def test_budget_never_skips_a_turn_to_fit_an_older_one() -> None:
    history = [*turn("q1", "short"), *turn("q2", "x" * 100), *turn("q3", "c")]
    # q1 would fit alone, but keeping it without q2 would hide what came between.
    assert texts(select_history(history, 20)) == ["q3", "c"]


def test_stopped_answers_are_marked_and_shown_to_the_model_as_interrupted() -> None:
    partial = stopped_answer("The answer is")
    assert is_stopped(partial) and partial.response_metadata[STATUS_KEY] == STOPPED
    assert partial.text == "The answer is"  # stored as streamed
    assert not is_stopped(AIMessage(content="done")) and not is_stopped(HumanMessage(content="q"))

    seen = for_model(partial)
    assert seen.text == "The answer is" + STOPPED_SUFFIX
    assert seen.response_metadata == {}  # our marker stays out of provider requests
    plain = AIMessage(content="done")
    assert for_model(plain) is plain


def test_budget_counts_the_stopped_suffix() -> None:
    history = [HumanMessage(content="q"), stopped_answer("abc")]
    size = len("q") + len("abc" + STOPPED_SUFFIX)
    assert texts(select_history(history, size)) == ["q", "abc" + STOPPED_SUFFIX]
    assert select_history(history, size - 1) == []


def test_offline_model_mentions_the_previous_question() -> None:
    assert compose_answer("now?", [], ("before?", False)).startswith(
        'Earlier you asked: "before?" No documents matched'
    )
    assert 'Earlier you asked: "before?" My answer to it was interrupted.' in compose_answer(
        "now?", [], ("before?", True)
    )
    assert "Earlier" not in compose_answer("now?", [])
    system = SystemMessage(content="context")
    assert previous_turn([system, HumanMessage(content="only")]) is None
    convo = [system, *turn("one", "a"), HumanMessage(content="two"), for_model(stopped_answer("b"))]
    assert previous_turn([*convo, HumanMessage(content="three")]) == ("two", True)
    assert previous_turn([*turn("one", "a"), HumanMessage(content="two")]) == ("one", False)


# ---------------------------------------------------------------- through the graph


async def test_next_turn_sees_earlier_turns_within_the_budget() -> None:
    prompts = PromptRecorder()
    graph = build_graph(OfflineChatModel(token_delay_s=0), NullRetriever(), checkpointer=InMemorySaver())
    first = await ask(graph, "What is a quokka?", thread("c1", prompts))
    second = await ask(graph, "Where do they live?", thread("c1", prompts))
    assert "Earlier" not in first
    assert 'Earlier you asked: "What is a quokka?"' in second
    assert texts(prompts.prompts[1][1:]) == ["What is a quokka?", first, "Where do they live?"]
    # Another conversation starts empty.
    assert "Earlier" not in await ask(graph, "Hello?", thread("c2"))


async def test_zero_budget_sends_no_history_and_keeps_only_the_last_turn() -> None:
    prompts = PromptRecorder()
    graph = build_graph(
        OfflineChatModel(token_delay_s=0),
        NullRetriever(),
        checkpointer=InMemorySaver(),
        history_budget_chars=0,
    )
    await ask(graph, "one", thread("c", prompts))
    assert "Earlier" not in await ask(graph, "two", thread("c", prompts))
    assert texts(prompts.prompts[1][1:]) == ["two"]
    state = await graph.aget_state(thread("c"))
    # Memory keeps what a later turn can be sent, and always the last exchange.
    assert texts(state.values["messages"])[0] == "two" and len(state.values["messages"]) == 2


async def test_a_stopped_turn_reaches_the_next_turn_marked_as_stopped() -> None:
    graph = build_graph(OfflineChatModel(token_delay_s=0.02), NullRetriever(), checkpointer=InMemorySaver())
    config = thread("c")
    tokens: list[str] = []
    third = asyncio.Event()

    async def on_token(text: str) -> None:
        tokens.append(text)
        if len(tokens) == 3:
            third.set()

    async def ignore(_: Any) -> None:
        return None

    task = asyncio.create_task(
        stream_agent(graph, "Tell me a story", on_sources=ignore, on_token=on_token, config=config)
    )
    await asyncio.wait_for(third.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    partial = "".join(tokens)
    assert await record_partial_turn(graph, config, "Tell me a story", partial)

    state = await graph.aget_state(config)
    assert state.next == ()  # as if generate had finished: the next turn starts cleanly
    question, answer = state.values["messages"]
    assert question.text == "Tell me a story"
    assert answer.text == partial and is_stopped(answer)

    prompts = PromptRecorder()
    reply = await ask(graph, "Go on", thread("c", prompts))
    assert 'Earlier you asked: "Tell me a story." My answer to it was interrupted.' in reply
    assert prompts.prompts[0][2].text == partial + STOPPED_SUFFIX


class FailingSaver(InMemorySaver):
    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")


class SlowSaver(InMemorySaver):
    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(30)


async def test_recording_a_stopped_turn_never_raises_and_is_bounded_in_time() -> None:
    model, retriever = OfflineChatModel(token_delay_s=0), NullRetriever()
    assert not await record_partial_turn(build_graph(model, retriever), thread("c"), "q", "a")
    failing = build_graph(model, retriever, checkpointer=FailingSaver())
    assert not await record_partial_turn(failing, thread("c"), "q", "a")
    slow = build_graph(model, retriever, checkpointer=SlowSaver())
    started = time.monotonic()
    assert not await record_partial_turn(slow, thread("c"), "q", "a", timeout_s=0.1)
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------- the SQLite store


async def test_sqlite_store_creates_its_directory_uses_wal_and_is_shared(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "checkpoints.sqlite"
    settings = load_settings(checkpoint_path=path, database_url=None)
    model, retriever = OfflineChatModel(token_delay_s=0), NullRetriever()
    # Two stores on one file stand in for two worker processes (each has its own connection).
    async with open_checkpointer(settings) as a, open_checkpointer(settings) as b:
        graph_a = build_graph(model, retriever, checkpointer=a)
        graph_b = build_graph(model, retriever, checkpointer=b)
        await ask(graph_a, "first on A", thread("c"))
        assert await record_partial_turn(graph_b, thread("c"), "stopped on B", "half an")
        reply = await ask(graph_a, "third on A", thread("c"))
        assert 'Earlier you asked: "stopped on B." My answer to it was interrupted.' in reply
        # Concurrent writers on both connections: the busy timeout serializes them, nothing fails.
        await asyncio.gather(
            *(ask(g, f"q{i}", thread(f"t{i}")) for i, g in enumerate([graph_a, graph_b] * 4))
        )
        state = await graph_b.aget_state(thread("c"))
        messages = state.values["messages"]
        assert [m.type for m in messages] == ["human", "ai"] * 3
        assert is_stopped(messages[3]) and messages[3].text == "half an"  # the marker survives storage
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_turn_cut_short_by_the_server_is_recorded_unmarked() -> None:
    graph = build_graph(OfflineChatModel(token_delay_s=0), NullRetriever(), checkpointer=InMemorySaver())
    assert await record_partial_turn(graph, thread("c"), "q", "part of", stopped=False)
    question, answer = (await graph.aget_state(thread("c"))).values["messages"]
    assert question.text == "q" and answer.text == "part of" and not is_stopped(answer)
    assert 'Earlier you asked: "q."' in await ask(graph, "next", thread("c"))
