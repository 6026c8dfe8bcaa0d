"""Queue depth: runs queued and not yet claimed, read from real runs in Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.metrics import GatewayMetrics
from gateway.queue_depth import QueueDepth, QueueSnapshot
from shared.keys import Keys
from shared.runstore import RunStore


@pytest.fixture
async def keys(redis: Redis) -> AsyncIterator[Keys]:
    k = Keys(f"t{uuid.uuid4().hex[:10]}")
    try:
        yield k
    finally:
        found = [key async for key in redis.scan_iter(f"{k.prefix}:*")]
        if found:
            await redis.delete(*found)


def gauge(metrics: GatewayMetrics, name: str) -> float:
    return next(s.value for m in metrics.registry.collect() for s in m.samples if s.name == name)


async def test_counts_queued_runs_not_claimed_ones(redis: Redis, keys: Keys) -> None:
    store = RunStore(redis, keys, retention_s=60, conversation_ttl_s=60)
    metrics = GatewayMetrics()
    depth = QueueDepth(redis, keys, metrics, chunk=2)  # several chunks
    assert await depth.refresh() == QueueSnapshot(0, 0, None)
    assert gauge(metrics, "chatgw_queue_waiting_runs") == 0
    assert gauge(metrics, "chatgw_queue_oldest_waiting_seconds") == 0

    before = time.time()
    runs = [uuid.uuid4().hex for _ in range(5)]
    for run_id in runs:
        await store.create_run(
            run_id=run_id, user="alice", conversation_id=uuid.uuid4().hex, new_conversation=True, content="q"
        )
    await store.claim(runs[0], "w1", lease_s=10)
    await store.claim(runs[1], "w1", lease_s=10)

    walked = await depth.walk()
    assert (walked.waiting, walked.scanned) == (3, 5)
    assert walked.oldest_created_at is not None and before <= walked.oldest_created_at <= time.time()

    await redis.delete(keys.queue_stats_lock())  # a new interval
    snapshot = await depth.refresh()
    assert snapshot is not None and snapshot.waiting == 3
    assert gauge(metrics, "chatgw_queue_waiting_runs") == 3
    assert 0 <= gauge(metrics, "chatgw_queue_oldest_waiting_seconds") < 60


async def test_one_gateway_walks_per_interval_the_others_read_its_result(redis: Redis, keys: Keys) -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    walker = QueueDepth(redis, keys, first, interval_s=30)
    reader = QueueDepth(redis, keys, second, interval_s=30)
    await redis.set(keys.queue_stats_lock(), "1", px=30_000)  # another gateway walks this interval...
    assert await reader.refresh() is None  # ...and has not written its result yet
    await redis.delete(keys.queue_stats_lock())
    await redis.set(keys.run("r1"), "x")  # not a hash: must not be read (no run is in flight)
    assert await walker.refresh() == QueueSnapshot(0, 0, None)
    await redis.set(keys.queue_stats(), QueueSnapshot(7, 9, time.time() - 12).line(), px=30_000)
    snapshot = await reader.refresh()
    assert snapshot is not None and snapshot.waiting == 7
    assert gauge(second, "chatgw_queue_waiting_runs") == 7
    assert 12 <= gauge(second, "chatgw_queue_oldest_waiting_seconds") < 20


def test_snapshot_line_round_trips() -> None:
    for snapshot in (QueueSnapshot(0, 0, None), QueueSnapshot(3, 10, 1795609079.9412345)):
        assert QueueSnapshot.parse(snapshot.line()) == snapshot
    merged = QueueSnapshot(1, 2, 5.0).merge(QueueSnapshot(2, 3, 4.0)).merge(QueueSnapshot(0, 1, None))
    assert merged == QueueSnapshot(3, 6, 4.0)
