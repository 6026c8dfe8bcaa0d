"""Group commit against a real Redis: many runs' appends share round trips and keep each run's order."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from shared.keys import Keys
from shared.protocol import event_body
from shared.runstore import AppendRefused, AppendRequest, RunStore
from worker.appender import Appender


async def test_appends_of_many_runs_share_batches_and_keep_their_order(redis: Redis) -> None:
    keys = Keys(f"t{uuid.uuid4().hex[:10]}")
    store = RunStore(redis, keys, retention_s=60, conversation_ttl_s=600)
    appender = Appender(store)
    runs = []
    try:
        for i in range(20):
            run_id, conversation_id = uuid.uuid4().hex, uuid.uuid4().hex
            await store.create_run(
                run_id=run_id,
                user=f"u{i}",
                conversation_id=conversation_id,
                new_conversation=True,
                content="q",
            )
            claim = await store.claim(run_id, "w", lease_s=60)
            assert claim is not None
            runs.append((run_id, conversation_id))

        def request(run_id: str, conversation_id: str, n: int) -> AppendRequest:
            body = event_body("token", run_id, conversation_id, 0.0, text=f"{n} ")
            return AppendRequest(run_id, conversation_id, 1, body, "", f"1:{n}")

        futures = [appender.submit(request(r, c, n)) for n in range(1, 11) for r, c in runs]
        outcomes = await asyncio.gather(*futures)
        assert sorted(set(outcomes)) == list(range(1, 11))  # every run got seq 1..10
        assert appender.batches_sent < len(futures) / 10  # 200 appends, a handful of round trips
        for run_id, _ in runs:
            log = await store.read_log(run_id, 0)
            assert [seq for seq, _ in log] == list(range(1, 11))
            assert [raw.endswith(f'"text":"{seq} "}}') for seq, raw in log] == [True] * 10

        # A stale attempt is refused per request, without failing the others in its batch.
        (r0, c0), (r1, c1) = runs[0], runs[1]
        stale = AppendRequest(r0, c0, 7, event_body("token", r0, c0, 0.0, text="x"), "", "7:1")
        fine = request(r1, c1, 11)
        refused, seq = await asyncio.gather(appender.submit(stale), appender.submit(fine))
        assert isinstance(refused, AppendRefused) and refused.reason == "stale_attempt"
        assert seq == 11
    finally:
        await appender.close()
        await store.close()
        for run_id, conversation_id in runs:
            await redis.delete(keys.run(run_id), keys.run_log(run_id), keys.conversation(conversation_id))
        await redis.delete(keys.leases())
        async for key in redis.scan_iter(f"{keys.prefix}:*"):
            await redis.delete(key)
