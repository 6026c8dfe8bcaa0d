"""Redis's connection errors become :class:`shared.errors.StoreUnavailable` at the edge of each store.

Callers above the stores (sessions, the worker) handle one exception whatever the client library
raised: a refused connection, a timeout, a reset socket.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.errors import StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")

REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def translate_redis_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except REDIS_UNREACHABLE as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc

    return wrapper
