"""The offline model and the agent graph: determinism, streaming order, limits and stop (cancellation)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from shared.protocol import Source
from worker.agent import NullRetriever, OfflineChatModel, build_graph, build_messages, stream_agent
from worker.agent.offline import format_context, parse_context

REDIS = Source(
    id="doc-1", title="Redis Streams", snippet="Redis streams are append-only logs with consumer groups."
)
OTHER = Source(id="doc-2", title="Dramatiq", snippet="A background task library.")


class FakeRetriever:
    def __init__(self, *sources: Source) -> None:
        self.sources = list(sources)
        self.calls: list[tuple[str, int]] = []

    async def retrieve(self, question: str, k: int) -> list[Source]:
        self.calls.append((question, k))
        return self.sources[:k]


class TokenCounter(AsyncCallbackHandler):
    """Counts tokens as the model emits them, independently of what stream_agent forwards."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        if isinstance(token, str) and token:
            self.tokens.append(token)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def on_sources(self, sources: list[Source]) -> None:
        self.events.append(("sources", sources))

    async def on_token(self, text: str) -> None:
        self.events.append(("token", text))

    @property
    def tokens(self) -> list[str]:
        return [text for kind, text in self.events if kind == "token"]


async def stream_tokens(model: OfflineChatModel, question: str, sources: list[Source]) -> list[str]:
    return [chunk.text async for chunk in model.astream(build_messages(question, sources))]


# ---------------------------------------------------------------- the model


async def test_same_input_same_answer() -> None:
    messages = build_messages("How do streams work?", [REDIS, OTHER])
    first = await OfflineChatModel(token_delay_s=0).ainvoke(messages)
    second = await OfflineChatModel(token_delay_s=0).ainvoke(messages)
    assert first.text == second.text
    assert first.text == OfflineChatModel(token_delay_s=0).invoke(messages).text
    assert await stream_tokens(OfflineChatModel(token_delay_s=0), "How do streams work?", [REDIS, OTHER]) == (
        await stream_tokens(OfflineChatModel(token_delay_s=0), "How do streams work?", [REDIS, OTHER])
    )


async def test_tokens_are_words_and_join_to_the_answer() -> None:
    model = OfflineChatModel(token_delay_s=0)
    tokens = await stream_tokens(model, "How do streams work?", [REDIS])
    answer = (await model.ainvoke(build_messages("How do streams work?", [REDIS]))).text
    assert "".join(tokens) == answer
    assert len(tokens) > 5
    assert all(t.strip() and " " not in t.strip() for t in tokens)
    assert "Redis Streams" in answer


async def test_sync_stream_matches_async() -> None:
    model = OfflineChatModel(token_delay_s=0)
    messages = build_messages("q?", [REDIS])
    assert [c.text for c in model.stream(messages)] == await stream_tokens(model, "q?", [REDIS])


async def test_max_tokens_is_respected_and_reported() -> None:
    model = OfflineChatModel(token_delay_s=0, max_tokens=4)
    tokens = await stream_tokens(model, "How do streams work?", [REDIS])
    assert len(tokens) == 4
    reply = await model.ainvoke(build_messages("How do streams work?", [REDIS]))
    assert reply.text == "".join(tokens) == "Redis streams are append-only"
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 4


async def test_token_delay_is_honoured() -> None:
    model = OfflineChatModel(token_delay_s=0.01, max_tokens=8)
    started = time.monotonic()
    tokens = await stream_tokens(model, "How do streams work?", [REDIS])
    # 7 gaps of 10 ms; loose bound so a slow CI box cannot fail it.
    assert len(tokens) == 8
    assert time.monotonic() - started >= 0.06


async def test_no_sources_gives_an_honest_answer() -> None:
    reply = await OfflineChatModel(token_delay_s=0).ainvoke([HumanMessage(content="What is the weather?")])
    assert reply.text.startswith("No documents matched your question")
    assert "offline model" in reply.text and "CHATGW_LLM=openai" in reply.text, "suggests a real model"


async def test_sources_that_share_no_word_with_the_question_are_not_quoted() -> None:
    reply = await OfflineChatModel(token_delay_s=0).ainvoke(build_messages("What is the weather?", [REDIS]))
    assert reply.text.startswith("No documents matched your question")


def test_context_round_trips_through_the_system_prompt() -> None:
    messy = Source(id="a\tb", title="Multi\nline  title", snippet="tab\there")
    assert parse_context(format_context([messy, REDIS])) == [
        Source(id="a b", title="Multi line title", snippet="tab\there"),
        REDIS,
    ]
    assert parse_context("no markers here") == []
    # A snippet keeps its lines (its Markdown structure) and its backslashes; odd line breaks are spaces.
    markdown = Source(id="m", title="M", snippet="| a | b |\n|---|\n```\nC:\\new \\n\n```\u2028end")
    [back] = parse_context(format_context([markdown]))
    assert back.snippet == markdown.snippet.replace("\u2028", " ")


# ---------------------------------------------------------------- the graph


async def test_stream_agent_sends_sources_before_tokens() -> None:
    retriever = FakeRetriever(REDIS, OTHER)
    graph = build_graph(OfflineChatModel(token_delay_s=0.001), retriever, k=1)
    rec = Recorder()
    question = "How do streams work?"
    result = await stream_agent(graph, question, on_sources=rec.on_sources, on_token=rec.on_token)
    assert retriever.calls == [("How do streams work?", 1)]
    assert rec.events[0] == ("sources", [REDIS])
    assert all(kind == "token" for kind, _ in rec.events[1:])
    assert result.content == "".join(rec.tokens)
    assert result.content == "Redis streams are append-only logs with consumer groups. [Redis Streams]"
    assert result.usage is not None and result.usage["completion_tokens"] == len(rec.tokens)
    assert result.usage["prompt_tokens"] > 0
    assert not result.truncated


async def test_stream_agent_without_sources() -> None:
    graph = build_graph(OfflineChatModel(token_delay_s=0, max_tokens=3), NullRetriever())
    rec = Recorder()
    result = await stream_agent(graph, "hello", on_sources=rec.on_sources, on_token=rec.on_token)
    assert rec.events[0] == ("sources", [])
    assert result.truncated and len(rec.tokens) == 3


async def test_checkpointer_keeps_history_per_thread() -> None:
    graph = build_graph(OfflineChatModel(token_delay_s=0), NullRetriever(), checkpointer=InMemorySaver())
    rec = Recorder()
    config: Any = {"configurable": {"thread_id": "conv-1"}}
    first = await stream_agent(graph, "one", on_sources=rec.on_sources, on_token=rec.on_token, config=config)
    second = await stream_agent(graph, "two", on_sources=rec.on_sources, on_token=rec.on_token, config=config)
    assert first.usage and second.usage
    # The second prompt carries the first question and answer.
    assert second.usage["prompt_tokens"] > first.usage["prompt_tokens"] + first.usage["completion_tokens"]
    state = await graph.aget_state(config)
    assert [m.type for m in state.values["messages"]] == ["human", "ai", "human", "ai"]


async def _assert_model_stops(counter: TokenCounter, rec: Recorder, delay: float) -> None:
    emitted, forwarded = len(counter.tokens), len(rec.tokens)
    await asyncio.sleep(delay * 6)
    assert len(counter.tokens) == emitted, "the model kept generating after cancel"
    assert len(rec.tokens) == forwarded, "a token arrived after cancel"


@pytest.mark.parametrize("where", ["between tokens", "inside on_token"])
async def test_cancel_stops_the_model_promptly(where: str) -> None:
    delay = 0.05
    graph = build_graph(OfflineChatModel(token_delay_s=delay), FakeRetriever(REDIS))
    counter, rec = TokenCounter(), Recorder()
    third_token = asyncio.Event()

    async def on_token(text: str) -> None:
        await rec.on_token(text)
        if len(rec.tokens) == 3:
            third_token.set()
            if where == "inside on_token":
                await asyncio.sleep(10)  # e.g. a slow write; cancel lands here

    task = asyncio.create_task(
        stream_agent(
            graph, "q", on_sources=rec.on_sources, on_token=on_token, config={"callbacks": [counter]}
        )
    )
    await asyncio.wait_for(third_token.wait(), 5)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < delay * 4
    assert len(rec.tokens) == 3
    await _assert_model_stops(counter, rec, delay)
