"""Conversation memory: the checkpointer that keeps each conversation's turns, and what reaches the model.

The agent graph runs with ``thread_id = conversation_id``, so its ``messages`` channel accumulates the
conversation in the checkpointer. Every worker opens the same store (a SQLite file by default, PostgreSQL
when ``CHATGW_DATABASE_URL`` is set), which is what lets any worker continue any conversation.

A completed turn is saved by the graph's generate node. A stopped turn never reaches the end of that
node (it was cancelled), so the worker records it with :func:`record_partial_turn`: the question and the
partial answer, marked as stopped. The model sees that answer with :data:`STOPPED_SUFFIX` appended.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from shared.settings import Settings

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow

    from worker.agent.graph import AgentGraph

log = logging.getLogger(__name__)

STATUS_KEY = "chatgw_status"  # in an AIMessage's response_metadata
STOPPED = "stopped"
STOPPED_SUFFIX = " [answer interrupted by the user]"
DEFAULT_HISTORY_BUDGET_CHARS = 8000  # same default as Settings.history_budget_chars

# Another worker process may hold SQLite's single write lock; wait for it rather than fail the run.
SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10.0
# Two workers booting at once must not both run the checkpointer's migrations (CREATE TABLE races and
# duplicate migration rows): setup() runs under this session-level advisory lock.
PG_SETUP_LOCK_KEY = 0x63686174_67770001
PG_SETUP_LOCK_TIMEOUT_S = 120.0
# A stop should end the run promptly even if the store is slow; losing the partial turn is the lesser harm.
RECORD_TIMEOUT_S = 5.0


# ---------------------------------------------------------------- messages and turns


def stopped_answer(text: str) -> AIMessage:
    """The stored form of a stopped run's partial answer: its text as streamed, marked as stopped."""
    return AIMessage(content=text, id=f"stopped-{uuid.uuid4().hex}", response_metadata={STATUS_KEY: STOPPED})


def is_stopped(message: BaseMessage) -> bool:
    return isinstance(message, AIMessage) and message.response_metadata.get(STATUS_KEY) == STOPPED


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
    if budget_chars <= 0:
        return []
    kept: list[list[BaseMessage]] = []
    used = 0
    for turn in reversed(split_turns(messages)):
        view = [for_model(m) for m in turn]
        size = sum(len(m.text) for m in view)
        if used + size > budget_chars:
            break
        kept.append(view)
        used += size
    return [m for turn in reversed(kept) for m in turn]


# ---------------------------------------------------------------- stopped turns


async def record_partial_turn(
    graph: AgentGraph,
    config: RunnableConfig,
    question: str,
    partial_text: str,
    *,
    stopped: bool = True,
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
    update = {
        "question": question,
        "answer": partial_text,
        "messages": [
            HumanMessage(content=question),
            stopped_answer(partial_text) if stopped else AIMessage(content=partial_text),
        ],
    }
    try:
        async with asyncio.timeout(timeout_s):
            await graph.aupdate_state(config, update, as_node=GENERATE)
    except Exception:
        thread = config.get("configurable", {}).get("thread_id")
        log.warning("could not record the stopped turn of conversation %s", thread, exc_info=True)
        return False
    return True


# ---------------------------------------------------------------- the checkpointer


@asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The conversation store, ready to use (tables created); closed on exit."""
    if settings.database_url:
        async with _open_postgres(settings.database_url) as pg:
            yield pg
    else:
        async with _open_sqlite(settings.checkpoint_path) as sqlite:
            yield sqlite


@asynccontextmanager
async def _open_sqlite(path: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    # timeout = SQLite's busy timeout: with several worker processes on one file, a writer waits for
    # the other's lock instead of failing with "database is locked".
    async with aiosqlite.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
        # WAL: readers in one process do not block a writer in another (setup() sets it too; it is
        # set here first so it holds before any table is touched).
        await conn.execute("PRAGMA journal_mode=WAL")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        yield saver


@asynccontextmanager
async def _open_postgres(url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    # Imported here so a SQLite deployment does not need the PostgreSQL packages.
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow, dict_row
    from psycopg_pool import AsyncConnectionPool

    # A pool (not one connection) so a connection dropped by a database restart is replaced instead of
    # failing every later run; the saver serializes its queries, so a few connections are plenty.
    pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=4,
        open=False,
        connection_class=AsyncConnection[DictRow],
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=True, timeout=PG_CONNECT_TIMEOUT_S)
    try:
        saver = AsyncPostgresSaver(pool)
        async with pool.connection() as lock_conn:
            await _take_setup_lock(lock_conn)
            try:
                await saver.setup()
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock(%s)", (PG_SETUP_LOCK_KEY,))
        yield saver
    finally:
        await pool.close()


async def _take_setup_lock(conn: AsyncConnection[DictRow]) -> None:
    """Take the setup lock by polling.

    Not ``pg_advisory_lock()``: a session blocked inside that statement holds a snapshot, and the
    migrations' ``CREATE INDEX CONCURRENTLY`` waits for every open snapshot, so the holder's setup
    would wait for us forever.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PG_SETUP_LOCK_TIMEOUT_S
    while True:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (PG_SETUP_LOCK_KEY,))
        row = await cursor.fetchone()
        if row is not None and row["locked"]:
            return
        if loop.time() > deadline:
            raise TimeoutError(
                f"another worker held the checkpointer setup lock for {PG_SETUP_LOCK_TIMEOUT_S:g} s"
            )
        await asyncio.sleep(0.1)
