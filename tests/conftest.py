"""Shared fixtures: a real Redis (the machine's on 127.0.0.1:6379, else one we start)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from cli.embedded_redis import EmbeddedRedis
from shared.testing.redis import redis_answers


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if redis_answers("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    server = EmbeddedRedis().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client (decode_responses) on the test Redis."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
