"""The conversation store: the LangGraph checkpointer that holds every conversation's memory.

Workers write it (one thread per conversation, ``thread_id = conversation_id``); gateways read it for
the HTTP API and delete threads (a deleted or expired conversation). Both open it with
:func:`open_checkpointer`: a SQLite file by default, PostgreSQL when ``CHATGW_DATABASE_URL`` is set.

Only the checkpoint the next turn needs is kept: every save deletes the thread's older checkpoints
(LangGraph keeps them all, ~18 KB a turn, for time travel chatgw does not offer), so a conversation's
storage is its latest state, whose size the history budget bounds (worker/agent/memory.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from shared.settings import Settings

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow

log = logging.getLogger(__name__)

# Another process may hold SQLite's single write lock; wait for it rather than fail.
SQLITE_BUSY_TIMEOUT_S = 30.0
PG_CONNECT_TIMEOUT_S = 10.0
# Two workers booting at once must not both run the checkpointer's migrations (CREATE TABLE races and
# duplicate migration rows): setup() runs under this session-level advisory lock.
PG_SETUP_LOCK_KEY = 0x63686174_67770001
PG_SETUP_LOCK_TIMEOUT_S = 120.0


@asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The conversation store, ready to use (tables created); closed on exit."""
    if settings.database_url:
        async with _open_postgres(settings.database_url) as pg:
            yield pg
    else:
        async with _open_sqlite(settings.checkpoint_path) as sqlite:
            yield sqlite


class LatestOnlySqliteSaver(AsyncSqliteSaver):
    """SQLite's saver, keeping only each thread's latest checkpoint (and its writes)."""

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        saved = await super().aput(config, checkpoint, metadata, new_versions)
        where = (str(saved["configurable"]["thread_id"]), saved["configurable"]["checkpoint_ns"])
        latest = checkpoint["id"]  # ids sort by time (uuid6): older ones are smaller
        async with self.lock, self.conn.cursor() as cur:
            await cur.execute(
                "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id < ?",
                (*where, latest),
            )
            await cur.execute(
                "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id < ?",
                (*where, latest),
            )
            await cur.execute(
                "UPDATE checkpoints SET parent_checkpoint_id = NULL "
                "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                (*where, latest),
            )
            await self.conn.commit()
        return saved


# Parameters: thread, ns and latest (the checkpoint just saved; ids sort by time, older ones are smaller).
_PG_THREAD = "thread_id = %(thread)s AND checkpoint_ns = %(ns)s"
PG_KEEP_LATEST_SQL = (
    f"DELETE FROM checkpoint_writes WHERE {_PG_THREAD} AND checkpoint_id < %(latest)s",
    f"DELETE FROM checkpoints WHERE {_PG_THREAD} AND checkpoint_id < %(latest)s",
    f"UPDATE checkpoints SET parent_checkpoint_id = NULL WHERE {_PG_THREAD} AND checkpoint_id = %(latest)s",
    # The channel values (blobs) no checkpoint of the thread refers to any more.
    f"DELETE FROM checkpoint_blobs b WHERE {_PG_THREAD} AND NOT EXISTS (SELECT 1 FROM checkpoints c "
    "WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns "
    "AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)",
)


@asynccontextmanager
async def _open_sqlite(path: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # timeout = SQLite's busy timeout: with several processes on one file, a writer waits for the
    # other's lock instead of failing with "database is locked".
    async with aiosqlite.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as conn:
        # WAL: readers in one process do not block a writer in another (setup() sets it too; it is
        # set here first so it holds before any table is touched).
        await conn.execute("PRAGMA journal_mode=WAL")
        saver = LatestOnlySqliteSaver(conn)
        await saver.setup()
        yield saver


@asynccontextmanager
async def _open_postgres(url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    # Imported here so a SQLite deployment does not load the PostgreSQL packages.
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg import AsyncConnection, Error
    from psycopg.rows import DictRow, dict_row
    from psycopg_pool import AsyncConnectionPool

    class LatestOnlyPostgresSaver(AsyncPostgresSaver):
        """PostgreSQL's saver, keeping only each thread's latest checkpoint, its writes and the blobs
        it references. (Not the saver's own ``aprune``: that one is built for concurrent writers of
        a thread, which chatgw never has, and costs several times more per save.)"""

        async def aput(
            self,
            config: RunnableConfig,
            checkpoint: Checkpoint,
            metadata: CheckpointMetadata,
            new_versions: ChannelVersions,
        ) -> RunnableConfig:
            saved = await super().aput(config, checkpoint, metadata, new_versions)
            thread = str(saved["configurable"]["thread_id"])
            params = {
                "thread": thread,
                "ns": saved["configurable"]["checkpoint_ns"],
                "latest": checkpoint["id"],
            }
            try:
                async with self._cursor(pipeline=True) as cur:
                    for sql in PG_KEEP_LATEST_SQL:
                        await cur.execute(sql, params)
            except Error as exc:
                # E.g. the thread was deleted meanwhile: the next save prunes again.
                log.warning("pruning the checkpoints of %s: %s", thread, exc)
            return saved

    # A pool (not one connection) so a connection dropped by a database restart is replaced instead of
    # failing every later call; the saver serializes its queries, so a few connections are plenty.
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
        saver = LatestOnlyPostgresSaver(pool)
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
                f"another process held the checkpointer setup lock for {PG_SETUP_LOCK_TIMEOUT_S:g} s"
            )
        await asyncio.sleep(0.1)
