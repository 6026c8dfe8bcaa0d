"""A conversation's turns as its memory (the LangGraph checkpointer) holds them.

The worker keeps each turn as two messages in the thread's ``messages`` channel and stamps them with
what a transcript needs, under the keys named here: the question (a HumanMessage) carries its run id
and when it was asked; the answer (an AIMessage) its run id, when it ended, its sources and whether
the user stopped it. The gateway reads the turns back with :func:`read_turns` for the HTTP API, so
there is one copy of a conversation: the model's memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver

# In a message's response_metadata (which providers never receive).
STATUS_KEY = "chatgw_status"  # STOPPED on an answer the user stopped
STOPPED = "stopped"
RUN_KEY = "chatgw_run_id"
AT_KEY = "chatgw_at"  # Unix time: when the question was asked, when the answer ended
SOURCES_KEY = "chatgw_sources"  # the retrieved sources, as Source.model_dump() dicts


@dataclass(frozen=True, slots=True)
class Turn:
    question: str
    answer: str  # "" when no answer was kept
    stopped: bool
    sources: list[dict[str, str]]
    run_id: str | None  # None for turns stored before runs were recorded
    asked_at: float | None
    answered_at: float | None


def is_stopped(message: BaseMessage | None) -> bool:
    return isinstance(message, AIMessage) and message.response_metadata.get(STATUS_KEY) == STOPPED


def question_message(question: str, *, run_id: str | None, asked_at: float) -> HumanMessage:
    stamp: dict[str, Any] = {AT_KEY: asked_at}
    if run_id:
        stamp[RUN_KEY] = run_id
    return HumanMessage(content=question, response_metadata=stamp)


def answer_message(
    answer: AIMessage,
    *,
    run_id: str | None,
    answered_at: float,
    sources: Sequence[dict[str, str]],
    stopped: bool,
) -> AIMessage:
    """``answer`` stamped with its run, time, sources and (when the user stopped it) the stop mark."""
    stamp: dict[str, Any] = {**answer.response_metadata, AT_KEY: answered_at, SOURCES_KEY: list(sources)}
    if run_id:
        stamp[RUN_KEY] = run_id
    if stopped:
        stamp[STATUS_KEY] = STOPPED
    return answer.model_copy(update={"response_metadata": stamp})


def turns_of(messages: Sequence[BaseMessage]) -> list[Turn]:
    """Each question with the last answer after it (messages before the first question are skipped)."""
    pairs: list[tuple[BaseMessage, BaseMessage | None]] = []
    for message in messages:
        if isinstance(message, HumanMessage):
            pairs.append((message, None))
        elif isinstance(message, AIMessage) and pairs:
            pairs[-1] = (pairs[-1][0], message)
    return [_turn(question, answer) for question, answer in pairs]


def _turn(question: BaseMessage, answer: BaseMessage | None) -> Turn:
    asked = question.response_metadata
    answered = answer.response_metadata if answer is not None else {}
    run_id = asked.get(RUN_KEY) or answered.get(RUN_KEY)
    return Turn(
        question=question.text,
        answer=answer.text if answer is not None else "",
        stopped=is_stopped(answer),
        sources=_sources(answered.get(SOURCES_KEY)),
        run_id=str(run_id) if run_id else None,
        asked_at=_time(asked.get(AT_KEY)),
        answered_at=_time(answered.get(AT_KEY)),
    )


def _sources(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        return []
    fields = ("id", "title", "snippet")
    return [
        {f: str(item.get(f, "")) for f in fields} for item in value if isinstance(item, dict) and "id" in item
    ]


def _time(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


async def read_turns(memory: BaseCheckpointSaver[Any], conversation_id: str) -> list[Turn]:
    """The turns a conversation's memory holds now (its latest checkpoint); [] when it has none."""
    found = await memory.aget_tuple({"configurable": {"thread_id": conversation_id, "checkpoint_ns": ""}})
    if found is None:
        return []
    messages = found.checkpoint.get("channel_values", {}).get("messages", [])
    return turns_of([m for m in messages if isinstance(m, BaseMessage)])
