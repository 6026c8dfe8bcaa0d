"""Conversation memory: the turns each conversation keeps, and what reaches the model.

The agent graph runs with ``thread_id = conversation_id``, so its ``messages`` channel holds the
conversation in the checkpointer (shared/checkpoints.py). Every worker opens the same store (a SQLite
file by default, PostgreSQL when ``CHATGW_DATABASE_URL`` is set), which is what lets any worker continue
any conversation.

A completed turn is saved by the graph's generate node. A stopped turn never reaches the end of that
node (it was cancelled), so the worker records it with :func:`record_partial_turn`: the question and the
partial answer, marked as stopped. The model sees that answer with :data:`STOPPED_SUFFIX` appended.
Both go through :func:`remember_turn`, which stamps the turn for the transcript (shared/transcript.py)
and forgets the turns no later turn can be sent: memory stays within the history budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig

from shared.checkpoints import open_checkpointer as open_checkpointer  # where workers open it, too
from shared.transcript import STATUS_KEY as STATUS_KEY
from shared.transcript import STOPPED as STOPPED
from shared.transcript import answer_message, question_message
from shared.transcript import is_stopped as is_stopped

if TYPE_CHECKING:
    from worker.agent.graph import AgentGraph

log = logging.getLogger(__name__)

STOPPED_SUFFIX = " [answer interrupted by the user]"
DEFAULT_HISTORY_BUDGET_CHARS = 8000  # same default as Settings.history_budget_chars
# A stop should end the run promptly even if the store is slow; losing the partial turn is the lesser harm.
RECORD_TIMEOUT_S = 5.0


# ---------------------------------------------------------------- messages and turns


def stopped_answer(text: str) -> AIMessage:
    """The stored form of a stopped run's partial answer: its text as streamed, marked as stopped."""
    return AIMessage(content=text, id=f"stopped-{uuid.uuid4().hex}", response_metadata={STATUS_KEY: STOPPED})


def for_model(message: BaseMessage) -> BaseMessage:
    """What the model sees of a stored message: a stopped answer says so in its text.

    Models only read content, so the mark has to be in the text; a fresh message also keeps our
    metadata out of provider requests.
    """
    if is_stopped(message):
        return AIMessage(content=message.text + STOPPED_SUFFIX, id=message.id)
    return message


def split_turns(messages: Sequence[BaseMessage]) -> list[list[BaseMessage]]:
    """Group messages into turns: each human message with the messages that follow it."""
    turns: list[list[BaseMessage]] = []
    for message in messages:
        if isinstance(message, HumanMessage) or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def select_history(messages: Sequence[BaseMessage], budget_chars: int) -> list[BaseMessage]:
    """The most recent whole turns whose text (as the model sees it) fits in ``budget_chars``.

    Newest first, stopping at the first turn that does not fit, so the model never sees a conversation
    with a gap or half a turn. ``budget_chars <= 0`` means no history.
    """
    return [for_model(m) for turn in _turns_within(messages, budget_chars) for m in turn]


def _turns_within(messages: Sequence[BaseMessage], budget_chars: int) -> list[list[BaseMessage]]:
    """The newest whole turns whose text as the model sees it fits in ``budget_chars``, oldest first."""
    if budget_chars <= 0:
        return []
    kept: list[list[BaseMessage]] = []
    used = 0
    for turn in reversed(split_turns(messages)):
        size = sum(len(for_model(m).text) for m in turn)
        if used + size > budget_chars:
            break
        kept.append(turn)
        used += size
    return kept[::-1]


# ---------------------------------------------------------------- remembering a turn


TURN_KEY = "chatgw_turn"  # in config["configurable"]; not a primitive, so never checkpointed


@dataclass(slots=True)
class TurnInfo:
    """What the worker tells the graph about the run a turn belongs to (and what it learns on the way)."""

    run_id: str | None = None
    asked_at: float | None = None  # when the user asked (the run's creation); default: when answered
    sources: list[dict[str, str]] = field(default_factory=list)  # set by the retrieve node


def turn_info(config: RunnableConfig) -> TurnInfo:
    found = (config.get("configurable") or {}).get(TURN_KEY)
    return found if isinstance(found, TurnInfo) else TurnInfo()


def remember_turn(
    stored: Sequence[BaseMessage],
    question: str,
    answer: BaseMessage,
    *,
    turn: TurnInfo,
    sources: Sequence[dict[str, str]],
    stopped: bool,
    budget_chars: int,
) -> list[BaseMessage]:
    """The ``messages`` update that adds one turn and forgets the older turns no later turn can be sent.

    Kept: the turns :func:`select_history` would send with the next question, and always the newest
    turn (so a conversation still shows its last exchange). Everything else is removed from memory,
    which keeps a conversation's storage within the budget however long it runs.
    """
    now = time.time()
    answer = answer if isinstance(answer, AIMessage) else AIMessage(content=answer.text)
    new = [
        question_message(question, run_id=turn.run_id, asked_at=turn.asked_at or now),
        answer_message(answer, run_id=turn.run_id, answered_at=now, sources=sources, stopped=stopped),
    ]
    turns = split_turns(stored)
    still_sent = max(0, len(_turns_within([*stored, *new], budget_chars)) - 1)  # minus the new turn
    forgotten = turns[: len(turns) - still_sent]
    removals: list[BaseMessage] = [RemoveMessage(id=m.id) for t in forgotten for m in t if m.id]
    return [*removals, *new]


# ---------------------------------------------------------------- stopped turns


async def record_partial_turn(
    graph: AgentGraph,
    config: RunnableConfig,
    question: str,
    partial_text: str,
    *,
    stopped: bool = True,
    budget_chars: int = DEFAULT_HISTORY_BUDGET_CHARS,
    timeout_s: float = RECORD_TIMEOUT_S,
) -> bool:
    """Save a cut-short run's question and partial answer as the conversation's latest turn.

    Written as if the generate node had returned them, so the thread ends up exactly where a completed
    turn would leave it. ``stopped=False`` stores the answer unmarked (a run ended by our own token
    budget: the user did not interrupt it). Never raises (except CancelledError): the run is already
    over and must still get its terminal event; on failure the next turn simply does not see this one.
    """
    from worker.agent.graph import GENERATE  # graph.py imports this module

    if graph.checkpointer is None:
        return False  # no memory configured (e.g. unit tests): nothing to keep
    turn = turn_info(config)
    try:
        async with asyncio.timeout(timeout_s):
            stored = (await graph.aget_state(config)).values.get("messages", [])
            messages = remember_turn(
                stored,
                question,
                stopped_answer(partial_text) if stopped else AIMessage(content=partial_text),
                turn=turn,
                sources=turn.sources,
                stopped=stopped,
                budget_chars=budget_chars,
            )
            update = {"question": question, "answer": partial_text, "messages": messages}
            await graph.aupdate_state(config, update, as_node=GENERATE)
    except Exception:
        thread = config.get("configurable", {}).get("thread_id")
        log.warning("could not record the stopped turn of conversation %s", thread, exc_info=True)
        return False
    return True
