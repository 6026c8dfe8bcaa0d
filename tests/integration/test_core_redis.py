"""What the gateway and runs leave in Redis: one pub/sub connection per gateway, channel cleanup, TTLs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis

from client import ChatgwConnection
from shared.testing.stack import Stack
from tests.integration.test_core_support import (
    SLOW_MS,
    assert_well_formed,
    close_quietly,
    connect,
    eventually,
    replay,
    start,
)


def redis_ports_of(pid: int, redis_port: int = 6379) -> set[int]:
    """Local ports of the TCP connections process `pid` holds to Redis (from /proc, no tools needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == redis_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def pubsub_clients_of(redis: Redis, pid: int) -> list[dict[str, str]]:
    """The Redis clients of process `pid` that are in pub/sub mode."""
    ports = redis_ports_of(pid)
    clients = await redis.client_list()
    return [
        c
        for c in clients
        if int(c["addr"].rsplit(":", 1)[1]) in ports and (int(c["sub"]) > 0 or int(c["psub"]) > 0)
    ]


async def numsub(redis: Redis, channel: str) -> int:
    return int((await redis.pubsub_numsub(channel))[0][1])


async def test_one_pubsub_connection_per_gateway(bare_stack: Stack, redis: Redis) -> None:
    start(bare_stack, CHATGW_OFFLINE_TOKEN_DELAY_MS=SLOW_MS)
    pid = bare_stack.gateways[0].pid
    prefix = bare_stack.prefix
    idle = await pubsub_clients_of(redis, pid)
    assert len(idle) == 1, idle  # the hub, subscribed to its home channel only
    assert idle[0]["sub"] == "1" and idle[0]["psub"] == "0"

    # Five sockets (five users: per-user limits stay out of the way), a run each, all in flight.
    conns: list[ChatgwConnection] = [await connect(bare_stack, f"user{i}") for i in range(5)]
    try:
        accepted = [await c.chat(f"Question number {i}") for i, c in enumerate(conns)]
        heads = [
            await c.follow(a["run_id"], until_seq=3, timeout=10) for c, a in zip(conns, accepted, strict=True)
        ]
        assert all(h.terminal is None for h in heads)
        busy = await pubsub_clients_of(redis, pid)
        assert len(busy) == 1, busy
        assert busy[0]["id"] == idle[0]["id"]  # the same connection, not a new one
        assert busy[0]["sub"] == str(1 + 5)
        channels = [f"{prefix}:run:{a['run_id']}:events" for a in accepted]
        assert [await numsub(redis, ch) for ch in channels] == [1] * 5
        # A second socket of the same user following the same run shares the subscription.
        extra = await connect(bare_stack, "user0")
        conns.append(extra)
        await extra.resume(accepted[0]["run_id"], 0)
        extra_head = await extra.follow(accepted[0]["run_id"], until_seq=4, timeout=10)
        assert await numsub(redis, channels[0]) == 1

        transcripts = await asyncio.gather(
            *(
                c.follow(a["run_id"], h, timeout=10)
                for c, a, h in zip(conns[:5], accepted, heads, strict=True)
            ),
            extra.follow(accepted[0]["run_id"], extra_head, timeout=10),
        )
        for t in transcripts:
            assert_well_formed(t)
            assert t.terminal is not None and t.terminal["type"] == "run.completed"

        async def all_unsubscribed() -> bool:
            return [await numsub(redis, ch) for ch in channels] == [0] * 5

        await eventually(all_unsubscribed, what="run channels to lose their subscriber")

        async def back_to_idle() -> bool:
            clients = await pubsub_clients_of(redis, pid)
            return len(clients) == 1 and clients[0]["sub"] == "1"

        await eventually(back_to_idle, what="the hub to hold only its home channel")
    finally:
        await close_quietly(*conns)


async def test_socket_close_releases_the_subscription(bare_stack: Stack, redis: Redis) -> None:
    start(bare_stack, CHATGW_OFFLINE_TOKEN_DELAY_MS=SLOW_MS)
    conn = await connect(bare_stack)
    accepted = await conn.chat("Unsubscribe me")
    channel = f"{bare_stack.prefix}:run:{accepted['run_id']}:events"
    await conn.follow(accepted["run_id"], until_seq=3, timeout=10)
    assert await numsub(redis, channel) == 1
    await conn.close()

    async def released() -> bool:
        return await numsub(redis, channel) == 0

    await eventually(released, what="the closed socket's subscription to go")
    assert await redis.hget(f"{bare_stack.prefix}:run:{accepted['run_id']}", "status") == "running"


async def test_finished_runs_expire_after_retention(bare_stack: Stack, redis: Redis) -> None:
    start(bare_stack, CHATGW_OFFLINE_TOKEN_DELAY_MS=SLOW_MS, CHATGW_RUN_RETENTION_S="2")
    prefix = bare_stack.prefix
    async with await connect(bare_stack) as conn:
        accepted = await conn.chat("Forget me soon")
        run_id = accepted["run_id"]
        meta, log = f"{prefix}:run:{run_id}", f"{prefix}:run:{run_id}:log"
        head = await conn.follow(run_id, until_seq=3, timeout=10)
        assert head.terminal is None
        assert await redis.ttl(meta) == -1 and await redis.ttl(log) == -1  # in flight: no TTL

        t = await conn.follow(run_id, head, timeout=10)
        assert t.terminal is not None and t.terminal["type"] == "run.completed"
        for key in (meta, log):
            pttl = await redis.pttl(key)
            assert 0 < pttl <= 2000, (key, pttl)
        # Still resumable within the retention...
        assert (await replay(conn, run_id, 0)).events == t.events

        async def expired() -> bool:
            return bool(await redis.exists(meta, log) == 0)

        await eventually(expired, timeout=5, what="the finished run's keys to expire")
        # ...and not found after it, for resume and for stop alike.
        await conn.resume(run_id, 0)
        assert (await conn.reply())["code"] == "run_not_found"
        assert (await conn.stop(run_id))["code"] == "run_not_found"
        # The conversation outlives its runs.
        follow_up = await conn.chat("Still there?", conversation_id=accepted["conversation_id"])
        assert follow_up["type"] == "run.accepted"
        await conn.follow(follow_up["run_id"], timeout=10)


async def test_stopped_queued_run_gets_a_ttl_too(bare_stack: Stack, redis: Redis) -> None:
    start(bare_stack, workers=0, CHATGW_RUN_RETENTION_S="2")
    async with await connect(bare_stack) as conn:
        accepted = await conn.chat("Never run")
        meta = f"{bare_stack.prefix}:run:{accepted['run_id']}"
        assert await redis.ttl(meta) == -1
        assert (await conn.stop(accepted["run_id"]))["status"] == "stopped"
        for key in (meta, f"{meta}:log"):
            assert 0 < await redis.pttl(key) <= 2000
