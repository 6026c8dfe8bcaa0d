"""The one place that builds Redis clients: bounded pools that wait, and retry on a dead connection.

Every chatgw process (gateway, worker, broker, hub) gets its clients here, sized by
``CHATGW_REDIS_MAX_CONNECTIONS``. A caller that finds the pool exhausted *waits* up to
``CHATGW_REDIS_POOL_TIMEOUT_S`` for a connection instead of failing at once (redis-py's default pool
raises ``MaxConnectionsError``, which a burst of sockets turned into "unavailable" while Redis was
healthy). A command that fails on a connection error is retried on a fresh connection: after a Redis
restart the pool's old connections are dead, and the first command on each would fail otherwise. Our
writes are idempotent (events by id, claims by attempt), so one retry is safe.
"""

from __future__ import annotations

import os
import socket

import redis as sync_redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry

from shared.settings import Settings

# Commands retried on a fresh connection: covers "connection closed by server" after a restart.
RETRIES = 2
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 0.5
SOCKET_TIMEOUT_S = 10.0  # a command with no answer for this long means a dead peer
CONNECT_TIMEOUT_S = 2.0


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(cap=_BACKOFF_CAP_S, base=_BACKOFF_BASE_S)


def client_name(kind: str) -> str:
    """What ``CLIENT LIST`` shows for a connection: which kind of pool, in which process."""
    return f"chatgw-{kind}-{os.getpid()}"


def async_redis(
    settings: Settings,
    *,
    decode_responses: bool = True,
    max_connections: int | None = None,
    blocking_reads: bool = False,
) -> Redis:
    """An asyncio client on a bounded pool that waits. ``blocking_reads``: no socket timeout, for
    pub/sub connections that sit idle between messages."""
    pool = BlockingConnectionPool.from_url(
        settings.require_redis_url,
        max_connections=max_connections or settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        decode_responses=decode_responses,
        socket_timeout=None if blocking_reads else SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        retry=AsyncRetry(_backoff(), RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
        health_check_interval=0 if blocking_reads else 30,
        client_name=client_name("pubsub" if blocking_reads else "async"),
    )
    return Redis.from_pool(pool)


def sync_redis_client(settings: Settings, *, url: str | None = None) -> sync_redis.Redis:
    """A blocking client (Dramatiq's broker) on a bounded pool that waits. Its socket timeout leaves
    room for the broker's blocking wake-up (BLPOP) on top of ordinary commands."""
    pool = sync_redis.BlockingConnectionPool.from_url(
        url or settings.require_redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
        retry=SyncRetry(_backoff(), RETRIES, (RedisConnectionError, RedisTimeoutError, socket.timeout)),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
        health_check_interval=30,
        client_name=client_name("sync"),
    )
    return sync_redis.Redis(connection_pool=pool)
