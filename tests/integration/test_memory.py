"""Conversation memory with real workers: across turns, across worker processes, and after a stop.

Every backend test runs on SQLite (a file of the test's own) and on PostgreSQL when 127.0.0.1:5432
answers (a database of the test's own, dropped afterwards); set CHATGW_TEST_POSTGRES_URL to use another.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from client import ChatgwConnection
from shared.settings import Settings, load_settings
from shared.testing.stack import Stack
from tests.integration.test_core_support import assert_well_formed, connect, start
from worker.agent import NullRetriever, OfflineChatModel, build_graph
from worker.agent.memory import is_stopped, open_checkpointer

ADMIN_URL = os.environ.get("CHATGW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database, so tests (and parallel runs) cannot see each other's checkpoints."""
    if not _postgres_answers(ADMIN_URL):
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}")
    import psycopg

    name = f"chatgw_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        pytest.skip(f"cannot create a PostgreSQL database: {exc}")
    try:
        yield urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The worker settings selecting one conversation store."""
    if request.param == "postgres":
        return {"CHATGW_DATABASE_URL": request.getfixturevalue("postgres_url")}
    return {"CHATGW_CHECKPOINT_PATH": str(tmp_path / "memory" / "checkpoints.sqlite")}


def store_settings(store: dict[str, str]) -> Settings:
    return load_settings(
        database_url=store.get("CHATGW_DATABASE_URL"),
        checkpoint_path=Path(store.get("CHATGW_CHECKPOINT_PATH", "unused.sqlite")),
    )


async def turn(conn: ChatgwConnection, content: str, conversation_id: str | None = None) -> tuple[str, str]:
    """One completed turn: (conversation_id, answer)."""
    accepted = await conn.chat(content, conversation_id)
    assert accepted["type"] == "run.accepted", accepted
    t = await conn.follow(accepted["run_id"], timeout=30)
    assert_well_formed(t)
    assert t.terminal is not None and t.terminal["type"] == "run.completed", t.terminal
    return accepted["conversation_id"], t.text


def earlier(question: str, *, interrupted: bool = False) -> str:
    """What the offline model says about the previous turn (the quote ends with its own punctuation)."""
    quoted = question if question[-1] in ".?!" else f"{question}."
    return f'Earlier you asked: "{quoted}"' + (" My answer to it was interrupted." if interrupted else "")


async def test_turns_remember_the_previous_turn_of_their_own_conversation(
    store: dict[str, str], bare_stack: Stack
) -> None:
    start(bare_stack, **store)
    async with await connect(bare_stack) as conn:
        conv, first = await turn(conn, "What is a quokka?")
        assert "Earlier" not in first
        _, second = await turn(conn, "Where do they live?", conv)
        assert earlier("What is a quokka?") in second
        _, third = await turn(conn, "What do they eat?", conv)
        assert earlier("Where do they live?") in third
        # Memory is per conversation: a new one starts empty.
        _, other = await turn(conn, "Unrelated question")
        assert "Earlier" not in other


async def test_any_worker_continues_any_conversation(store: dict[str, str], bare_stack: Stack) -> None:
    bare_stack.settings.update(store)
    worker_a = bare_stack.start_worker()
    bare_stack.start_gateway()
    async with await connect(bare_stack) as conn:
        conv, _ = await turn(conn, "Remember the number 42")
        # Turn 2 can only run on worker B: A is gone before B exists.
        worker_a.stop()
        assert not worker_a.alive()
        worker_b = bare_stack.start_worker()
        _, answer = await turn(conn, "Which number was it?", conv)
        assert earlier("Remember the number 42") in answer
        assert worker_b.alive()


async def test_two_live_workers_share_the_store(store: dict[str, str], bare_stack: Stack) -> None:
    # Both boot at once (their store setups race), then take turns of 8 conversations in any order.
    start(bare_stack, workers=2, **store)
    users = [f"user{i}" for i in range(8)]
    conns = [await connect(bare_stack, user) for user in users]
    try:
        firsts = await asyncio.gather(
            *(turn(c, f"First question of {u}") for c, u in zip(conns, users, strict=True))
        )
        seconds = await asyncio.gather(
            *(turn(c, "And then?", conv) for c, (conv, _) in zip(conns, firsts, strict=True))
        )
    finally:
        for c in conns:
            await c.close()
    for user, (_, answer) in zip(users, seconds, strict=True):
        assert earlier(f"First question of {user}") in answer
    assert all(w.alive() for w in bare_stack.workers)


async def test_a_stopped_answer_reaches_the_next_turn_marked_as_stopped(
    store: dict[str, str], bare_stack: Stack
) -> None:
    start(bare_stack, CHATGW_OFFLINE_TOKEN_DELAY_MS="40", **store)
    async with await connect(bare_stack) as conn:
        accepted = await conn.chat("Tell me a long story")
        run_id, conv = accepted["run_id"], accepted["conversation_id"]
        live = await conn.follow(run_id, until_seq=6, timeout=10)
        await conn.stop(run_id)
        live = await conn.follow(run_id, live, timeout=10)
        assert live.terminal is not None and live.terminal["type"] == "run.stopped"
        partial = live.terminal["content"]
        assert partial and len(live.tokens) >= 4

        _, answer = await turn(conn, "Please go on", conv)
        assert earlier("Tell me a long story", interrupted=True) in answer

    # The store holds the partial answer exactly as the client saw it, marked as stopped.
    async with open_checkpointer(store_settings(store)) as saver:
        graph = build_graph(OfflineChatModel(), NullRetriever(), checkpointer=saver)
        state = await graph.aget_state({"configurable": {"thread_id": conv}})
    messages = state.values["messages"]
    assert [m.type for m in messages] == ["human", "ai", "human", "ai"]
    assert messages[0].text == "Tell me a long story"
    assert is_stopped(messages[1]) and messages[1].text == partial
    assert not is_stopped(messages[3]) and messages[3].text == answer


async def test_postgres_store_setup_is_safe_when_workers_boot_together(postgres_url: str) -> None:
    settings = load_settings(database_url=postgres_url)
    async with AsyncExitStack() as stack:
        savers: list[Any] = await asyncio.gather(
            *(stack.enter_async_context(open_checkpointer(settings)) for _ in range(4))
        )
        assert len(savers) == 4
