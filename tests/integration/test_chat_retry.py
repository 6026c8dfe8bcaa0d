"""A chat whose reply was lost can be sent again: same id and content, same run, never a second one."""

from __future__ import annotations

from redis.asyncio import Redis

from client import ChatgwConnection
from shared.testing.stack import Stack


async def test_a_retried_chat_is_the_same_run(stack: Stack, redis: Redis) -> None:
    url = stack.gateways[0].url
    async with await ChatgwConnection.open(url, "dev:alice") as conn:
        first = await conn.chat("exactly once, please", ref="retry-1")
        done = await conn.follow(first["run_id"])
    # The reply was "lost": a new socket (could be another gateway) sends the same frame again.
    async with await ChatgwConnection.open(url, "dev:alice") as conn:
        again = await conn.chat("exactly once, please", ref="retry-1")
        assert (again["run_id"], again["conversation_id"]) == (first["run_id"], first["conversation_id"])
        replay = await conn.follow(again["run_id"])
        assert replay.events == done.events, "the retry follows the original run from its start"
        # The same id with other content is a new message, not a retry.
        other = await conn.chat("a different question", ref="retry-1")
        assert other["run_id"] != first["run_id"]
        await conn.follow(other["run_id"])
    runs = [k for k in await redis.keys(f"{stack.prefix}:run:*") if k.count(":") == 2]
    assert len(runs) == 2


async def test_another_user_with_the_same_id_gets_a_run_of_their_own(stack: Stack) -> None:
    url = stack.gateways[0].url
    async with await ChatgwConnection.open(url, "dev:alice") as alice:
        mine = await alice.chat("same words", ref="shared-id")
        await alice.follow(mine["run_id"])
    async with await ChatgwConnection.open(url, "dev:bob") as bob:
        theirs = await bob.chat("same words", ref="shared-id")
        assert theirs["run_id"] != mine["run_id"]
        await bob.follow(theirs["run_id"])
