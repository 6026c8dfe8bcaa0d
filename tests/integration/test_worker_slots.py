"""Run slots (issue 9): a worker takes only as many runs as it has free slots, so a full worker leaves
the rest queued until a slot frees, and no run waits in the queue while another worker has room."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from client import ChatgwConnection
from shared.keys import Keys
from shared.testing.invariants import assert_run_invariants
from shared.testing.stack import Stack

LONG_RUNS = {
    # 25 tokens, 100 ms apart: each run lasts about 2.5 s, so runs started together overlap.
    "CHATGW_OFFLINE_TOKEN_DELAY_MS": "100",
    "CHATGW_OFFLINE_MAX_TOKENS": "25",
    "CHATGW_WORKER_CONCURRENCY": "4",
    "CHATGW_MAX_RUNS_PER_USER": "100",
    "CHATGW_RATE_LIMIT_BURST": "100",
}


async def _eight_runs(conn: ChatgwConnection, tag: str) -> tuple[list[str], float, list[dict[str, float]]]:
    """Start 8 runs at once and follow them to their end: their ids, when (Unix time) the last was
    accepted, and when each one's run.started and terminal event were written (their ``ts``)."""
    for i in range(8):
        await conn.send({"type": "chat", "content": f"a long answer ({tag} {i})", "id": f"{tag}{i}"})
    replies = [await conn.reply(timeout=30) for _ in range(8)]
    accepted_at = time.time()
    assert all(r["type"] == "run.accepted" for r in replies), replies
    run_ids = [r["run_id"] for r in replies]
    timed = await asyncio.gather(*(_follow_timed(conn, run_id) for run_id in run_ids))
    return run_ids, accepted_at, timed


async def _follow_timed(conn: ChatgwConnection, run_id: str) -> dict[str, float]:
    transcript = await conn.follow(run_id, timeout=60)
    assert_run_invariants(transcript.events)
    assert transcript.terminal is not None and transcript.terminal["type"] == "run.completed"
    return {"run.started": transcript.events[0]["ts"], "end": transcript.terminal["ts"]}


async def test_runs_wait_only_for_a_free_slot_on_any_worker(bare_stack: Stack, redis: Redis) -> None:
    bare_stack.settings.update(LONG_RUNS)
    bare_stack.start_both()
    gateway = bare_stack.gateways[0]
    async with await ChatgwConnection.open(gateway.url, "dev:slots") as conn:
        # One worker of 4 slots, 8 runs: 4 start at once, the others only as slots free up.
        _, _, timed = await _eight_runs(conn, "one worker")
        starts = sorted(at["run.started"] for at in timed)
        first_end = min(at["end"] for at in timed)
        assert starts[3] - starts[0] < 2.0, starts
        assert all(start >= first_end - 0.05 for start in starts[4:]), (starts, first_end)

        # Two workers of 4 slots, 8 runs: all 8 start at once, 4 on each.
        bare_stack.start_worker()
        run_ids, accepted_at, timed = await _eight_runs(conn, "two workers")
    latest_start_s = max(at["run.started"] for at in timed) - accepted_at
    owners = [await redis.hget(Keys(bare_stack.prefix).run(run_id), "worker") for run_id in run_ids]
    print(f"8 runs on 2 x 4 slots: the last started {latest_start_s:.2f} s after the last was accepted")
    assert sorted(owners.count(w) for w in set(owners)) == [4, 4], owners
    assert latest_start_s < 1.0
