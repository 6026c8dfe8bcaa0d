"""The conversation index in a real Redis: listing pages, deleting, expiry (no processes needed)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from shared.conversations import ConversationStore, PageCursor
from shared.errors import ConversationNotFound
from shared.keys import Keys
from shared.runstore import RunStore

TTL_S = 3600


@pytest.fixture
async def stores(redis: Redis) -> AsyncIterator[tuple[RunStore, ConversationStore]]:
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    try:
        yield (
            RunStore(redis, keys, retention_s=60, conversation_ttl_s=TTL_S),
            ConversationStore(redis, keys, ttl_s=TTL_S),
        )
    finally:
        async for key in redis.scan_iter(f"{keys.prefix}:*", count=10_000):
            await redis.delete(key)


async def start(
    runs: RunStore, user: str, content: str, conversation_id: str | None = None
) -> tuple[str, str]:
    """A run that opens (or continues) a conversation: (run_id, conversation_id)."""
    created = await runs.create_run(
        run_id=uuid.uuid4().hex,
        user=user,
        conversation_id=conversation_id or uuid.uuid4().hex,
        new_conversation=conversation_id is None,
        content=content,
    )
    return created.run_id, created.conversation_id


async def end(runs: RunStore, run_id: str, conversation_id: str) -> None:
    await runs.append(run_id, conversation_id, 1, "run.completed", {"content": "done"})


async def all_pages(index: ConversationStore, user: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: PageCursor | None = None
    while True:
        found, cursor = await index.page(user, limit, cursor)
        pages.append([meta.id for meta in found])
        if cursor is None:
            return pages


async def test_pages_list_the_users_conversations_newest_first(
    stores: tuple[RunStore, ConversationStore],
) -> None:
    runs, index = stores
    opened = []
    for i in range(5):
        run_id, conversation_id = await start(runs, "alice", f"  question\n{i}  ")
        await end(runs, run_id, conversation_id)
        opened.append(conversation_id)
    await start(runs, "bob", "not alice's")
    newest_first = opened[::-1]

    assert await all_pages(index, "alice", 2) == [newest_first[:2], newest_first[2:4], newest_first[4:]]
    assert await all_pages(index, "alice", 5) == [newest_first]
    found, _ = await index.page("alice", 1)
    assert found[0].title == "question 4" and found[0].active_run is None
    assert found[0].created_at == found[0].last_activity

    # A follow-up moves its conversation to the top, with the run in flight shown.
    run_id, _ = await start(runs, "alice", "again", opened[0])
    found, _ = await index.page("alice", 1)
    assert found[0].id == opened[0] and found[0].active_run == run_id
    assert found[0].title == "question 0", "the title is the first question"


async def test_equal_activity_pages_without_a_gap_or_a_duplicate(
    stores: tuple[RunStore, ConversationStore], redis: Redis
) -> None:
    runs, index = stores
    opened = [(await start(runs, "alice", f"q{i}"))[1] for i in range(7)]
    same = time.time()
    await redis.zadd(runs.keys.user_conversations("alice"), dict.fromkeys(opened, same))
    pages = await all_pages(index, "alice", 2)
    listed = [c for page in pages for c in page]
    assert sorted(listed) == sorted(opened) and len(listed) == len(set(listed))
    assert [len(p) for p in pages] == [2, 2, 2, 1]


async def test_a_page_is_filled_past_conversations_gone_meanwhile(
    stores: tuple[RunStore, ConversationStore], redis: Redis
) -> None:
    runs, index = stores
    opened = [(await start(runs, "alice", f"q{i}"))[1] for i in range(6)]
    for gone in opened[2:5]:  # e.g. expired by Redis before the sweep came by
        await redis.delete(runs.keys.conversation(gone))
    found, cursor = await index.page("alice", 2)
    assert [m.id for m in found] == [opened[5], opened[1]] and cursor is not None
    found, cursor = await index.page("alice", 2, cursor)
    assert [m.id for m in found] == [opened[0]] and cursor is None
    assert await redis.zcard(runs.keys.user_conversations("alice")) == 3, "the stale entries were dropped"


async def test_deleting_removes_every_key_and_refuses_new_runs_meanwhile(
    stores: tuple[RunStore, ConversationStore], redis: Redis
) -> None:
    runs, index = stores
    first, conversation_id = await start(runs, "alice", "q1")
    await end(runs, first, conversation_id)
    second, _ = await start(runs, "alice", "q2", conversation_id)
    await end(runs, second, conversation_id)

    assert await index.begin_delete(conversation_id, "bob") is None, "only its owner may delete it"
    doomed = await index.begin_delete(conversation_id, "alice")
    assert (
        doomed is not None and doomed.owner == "alice" and sorted(doomed.run_ids) == sorted([first, second])
    )
    with pytest.raises(ConversationNotFound):
        await start(runs, "alice", "q3", conversation_id)
    await index.finish_delete(conversation_id, doomed)

    assert not [
        key async for key in redis.scan_iter(f"{runs.keys.prefix}:*", count=10_000) if "alice:runs" not in key
    ]
    assert await index.get("alice", conversation_id) is None
    assert await index.begin_delete(conversation_id, "alice") is None


async def test_expiry_takes_unused_conversations_and_spares_a_run_in_flight(
    stores: tuple[RunStore, ConversationStore], redis: Redis
) -> None:
    runs, index = stores
    idle_run, idle = await start(runs, "alice", "idle")
    await end(runs, idle_run, idle)
    _, busy = await start(runs, "alice", "busy")  # its run never ends here
    later = time.time() + 10
    assert sorted(await index.unused_since(later)) == sorted([idle, busy])
    assert await index.unused_since(later - 100) == []

    before = time.time()
    assert await index.begin_expiry(busy, later) is None
    postponed = await redis.zscore(runs.keys.conversations_activity(), busy)
    assert postponed is not None and postponed >= before, "a run in flight postpones its expiry"
    assert await index.begin_expiry(idle, before - 100) is None, "used after the cutoff"
    doomed = await index.begin_expiry(idle, later)
    assert doomed is not None and doomed.owner == "alice" and doomed.run_ids == [idle_run]
    await index.finish_delete(idle, doomed)
    assert await index.unused_since(later) == [busy]
    assert await index.get("alice", idle) is None and await index.get("alice", busy) is not None
