"""A Redis connection for hot paths: whole batches of commands, packed in C, in one write.

redis-py's asyncio pipeline packs each argument in Python, waits on its pool's condition, and wraps
every send in ``wait_for`` (a task per send). For chatgw's per-token appends that was most of the
worker's CPU per token. Here a batch is packed by hiredis into one ``bytes`` and written at once,
on a connection that belongs to its owner, with one deadline for the whole exchange. It is built
from the same settings as every other client (:func:`shared.redis_factory.async_redis`), and a dead
connection is replaced at the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Command = Sequence[str | bytes | int | float]


def pack(commands: Sequence[Command]) -> bytes:
    # hiredis's stub types the tuple as a single element; it takes any number.
    return b"".join(hiredis.pack_command(tuple(command)) for command in commands)  # type: ignore[arg-type]


class PackedConnection:
    def __init__(self, redis: Redis, *, timeout_s: float) -> None:
        pool = redis.connection_pool
        # The pool's own settings (address, auth, TLS, decoding); the deadline is ours, per batch.
        self._connection: AbstractConnection = pool.connection_class(
            **{**pool.connection_kwargs, "socket_timeout": None}
        )
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()  # one batch on the wire at a time: replies come back in order

    async def execute(self, packed: bytes, replies: int) -> list[Any]:
        """Send packed commands; their replies in order, an error reply as its ResponseError.

        Raises redis's ConnectionError or TimeoutError when Redis cannot be reached; the connection
        is then dropped and the next batch opens a new one."""
        conn = self._connection
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout_s):
                    if not conn.is_connected:
                        await conn.connect()  # type: ignore[no-untyped-call]
                    await conn.send_packed_command(packed, check_health=False)
                    results: list[Any] = []
                    for _ in range(replies):
                        try:
                            results.append(await conn.read_response())
                        except ResponseError as error:
                            results.append(error)
                    return results
            except TimeoutError:
                await conn.disconnect(nowait=True)
                raise RedisTimeoutError("Redis did not answer a batch in time") from None
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await conn.disconnect(nowait=True)
                raise
            except BaseException:
                # Cancelled mid-exchange: replies may still be on their way; never reuse the stream.
                await conn.disconnect(nowait=True)
                raise

    async def close(self) -> None:
        await self._connection.disconnect()
