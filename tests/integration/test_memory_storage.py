"""A conversation's storage stays flat however long it runs, on SQLite and on PostgreSQL.

1,000 turns of one conversation (300 on PostgreSQL, slower per save), in-process with the offline
model at 0 delay, through the real stores: only the latest checkpoint is kept, and the history budget
bounds what it holds. Every tenth turn is a stopped one, recorded the way the worker records it. The
PostgreSQL case gets a database of its own.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from shared.checkpoints import open_checkpointer
from shared.settings import load_settings
from shared.transcript import read_turns
from tests.integration.test_memory import postgres_url  # noqa: F401 - a fixture (a database of the test's own)
from worker.agent import NullRetriever, OfflineChatModel, build_graph, stream_agent
from worker.agent.memory import TURN_KEY, TurnInfo, record_partial_turn

BUDGET = 2_000  # characters: a few turns of the offline model's answers
THREAD = "long-conversation"


async def _ignore(_: Any) -> None:
    return None


def graph_on(memory: Any) -> Any:
    model = OfflineChatModel(token_delay_s=0, max_tokens=40)
    return build_graph(model, NullRetriever(), checkpointer=memory, history_budget_chars=BUDGET)


async def converse(memory: Any, measure: Any, turns: int) -> dict[int, tuple[int, int]]:
    """Run the turns; measure (rows, bytes) after turn 50, then every 100 turns."""
    graph = graph_on(memory)
    sizes: dict[int, tuple[int, int]] = {}
    for n in range(1, turns + 1):
        config: RunnableConfig = {"configurable": {"thread_id": THREAD, TURN_KEY: TurnInfo(run_id=f"r{n}")}}
        if n % 10 == 0:
            await record_partial_turn(graph, config, f"question {n}", "a partial answer", budget_chars=BUDGET)
        else:
            await stream_agent(graph, f"question {n}", on_sources=_ignore, on_token=_ignore, config=config)
        if n == 50 or n % 100 == 0:
            sizes[n] = await measure()
    kept = await read_turns(memory, THREAD)
    assert kept[-1].question == f"question {turns}" and kept[-1].stopped and kept[-1].run_id == f"r{turns}"
    assert 1 < len(kept) < 40, "memory holds the turns within the budget, not the whole conversation"
    assert [t.run_id for t in kept] == [f"r{n}" for n in range(turns - len(kept) + 1, turns + 1)]
    return sizes


def assert_flat(sizes: dict[int, tuple[int, int]]) -> None:
    # Once the first turns fill the budget nothing grows: the same rows, about the same bytes.
    rows, size = sizes[50]
    for later_rows, later_size in sizes.values():
        assert later_rows == rows and later_size < 1.5 * size, sizes


async def test_sqlite_storage_stays_flat_over_a_thousand_turns(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.sqlite"

    async def measure() -> tuple[int, int]:
        with sqlite3.connect(path) as conn:
            rows = sum(
                conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("checkpoints", "writes")
            )
            stored = conn.execute(
                "SELECT coalesce(sum(length(checkpoint) + length(metadata)), 0) FROM checkpoints"
            ).fetchone()[0]
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            (free,) = conn.execute("PRAGMA freelist_count").fetchone()
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        assert (pages - free) * page_size < 1_000_000, "the file's pages in use stay few"
        return rows, int(stored)

    async with open_checkpointer(load_settings(checkpoint_path=path, database_url=None)) as memory:
        sizes = await converse(memory, measure, turns=1_000)
    assert_flat(sizes)
    assert path.stat().st_size < 2_000_000, "freed pages are reused: the file does not grow either"


async def test_postgres_storage_stays_flat(postgres_url: str) -> None:  # noqa: F811
    async with open_checkpointer(load_settings(database_url=postgres_url)) as memory:
        pool = memory.conn  # type: ignore[attr-defined]  # the saver's connection pool

        async def measure() -> tuple[int, int]:
            async with pool.connection() as conn:
                found = await conn.execute(
                    "SELECT (SELECT count(*) FROM checkpoints) + (SELECT count(*) FROM checkpoint_blobs)"
                    " + (SELECT count(*) FROM checkpoint_writes) AS rows,"
                    " (SELECT coalesce(sum(pg_column_size(checkpoint)), 0) FROM checkpoints)"
                    " + (SELECT coalesce(sum(pg_column_size(blob)), 0) FROM checkpoint_blobs) AS bytes"
                )
                row = await found.fetchone()
            assert row is not None
            return int(row["rows"]), int(row["bytes"])

        assert_flat(await converse(memory, measure, turns=300))
