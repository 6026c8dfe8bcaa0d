"""One pub/sub connection per gateway process, shared by every local socket.

The hub subscribes to a run's channel when the first local listener needs it and unsubscribes after
the last one leaves (no pattern subscriptions: a gateway only receives the runs its sockets follow).
Every subscription confirmation from Redis — the first one, and the ones redis-py sends again after
it reconnects — tells the channel's listeners to read the run's log, because pub/sub is
at-most-once: whatever was published while the connection was down is only in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.keys import Keys
from shared.protocol import TERMINAL_EVENT_TYPES, peek_event

log = logging.getLogger(__name__)


class HubListener(Protocol):
    def on_event(self, seq: int, raw: str, terminal: bool) -> None:
        """A live event of the run. Must not block."""

    def on_subscribed(self) -> None:
        """Redis confirmed the channel (again): read the log to fill any hole. Must not block."""


class PubSubHub:
    def __init__(self, redis: Redis, keys: Keys, *, hub_id: str, ping_interval_s: float = 5.0) -> None:
        self._redis = redis
        self._keys = keys
        self._home_channel = keys.gateway_channel(hub_id)  # keeps the connection open while idle
        self._ping_interval_s = ping_interval_s
        self._listeners: dict[str, set[HubListener]] = {}
        self._confirmed: set[str] = set()
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.connected = False
        self.reconnects = 0

    @property
    def channel_count(self) -> int:
        return len(self._listeners)

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(self._home_channel)
        self._reader = asyncio.create_task(self._read_forever(), name="pubsub-hub")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def subscribe(self, run_id: str, listener: HubListener) -> None:
        listeners = self._listeners.setdefault(run_id, set())
        first = not listeners
        listeners.add(listener)
        if first:
            await self._subscribe_channel(run_id)
        elif run_id in self._confirmed:
            listener.on_subscribed()

    async def _subscribe_channel(self, run_id: str) -> None:
        assert self._pubsub is not None
        try:
            await self._pubsub.subscribe(self._keys.run_channel(run_id))
        except (RedisConnectionError, RedisTimeoutError, OSError):
            # redis-py only remembers (and resubscribes after a reconnect) channels whose SUBSCRIBE
            # went through, so keep trying; the confirmation then triggers the listeners' log read.
            log.warning("subscribe to run %s deferred: Redis unreachable", run_id)
            self._spawn(self._retry_subscribe(run_id))

    async def _retry_subscribe(self, run_id: str) -> None:
        delay = 0.1
        while run_id in self._listeners and run_id not in self._confirmed:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            if run_id not in self._listeners or run_id in self._confirmed:
                return
            assert self._pubsub is not None
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                await self._pubsub.subscribe(self._keys.run_channel(run_id))
                return

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def unsubscribe(self, run_id: str, listener: HubListener) -> None:
        listeners = self._listeners.get(run_id)
        if not listeners or listener not in listeners:
            return
        listeners.discard(listener)
        if listeners:
            return
        del self._listeners[run_id]
        self._confirmed.discard(run_id)
        assert self._pubsub is not None
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            await self._pubsub.unsubscribe(self._keys.run_channel(run_id))

    def discard_later(self, run_id: str, listener: HubListener) -> None:
        """Unsubscribe from synchronous code (a listener that just saw its run end)."""
        self._spawn(self.unsubscribe(run_id, listener))

    async def _read_forever(self) -> None:
        assert self._pubsub is not None
        backoff = 0.05
        loop = asyncio.get_running_loop()
        last_ping = loop.time()
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
                if not self.connected:
                    self.connected = True
                    backoff = 0.05
                if message is not None:
                    self._dispatch(message)
                if loop.time() - last_ping >= self._ping_interval_s:
                    # A ping on an idle connection notices a half-open TCP connection.
                    last_ping = loop.time()
                    await self._pubsub.ping()
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if self.connected:
                    log.warning("pub/sub connection lost (%s); reconnecting", exc)
                self.connected = False
                self.reconnects += 1
                self._confirmed.clear()
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 2.0)
                await self._reconnect()
            except Exception:
                log.exception("pub/sub hub: unexpected error; continuing")
                await asyncio.sleep(0.1)

    async def _reconnect(self) -> None:
        """Resubscribe every channel in use; confirmations then trigger the log reads."""
        assert self._pubsub is not None
        with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
            channels = [self._home_channel, *(self._keys.run_channel(r) for r in self._listeners)]
            # redis-py resubscribes what it knows on connect; subscribing again is idempotent and
            # also covers channels whose SUBSCRIBE never reached Redis.
            await self._pubsub.subscribe(*channels)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if isinstance(channel, bytes):
            channel = channel.decode()
        if channel == self._home_channel or channel is None:
            return
        run_id = self._keys.run_id_from_channel(channel)
        if run_id is None:
            return
        listeners = self._listeners.get(run_id)
        if kind == "subscribe":
            if listeners:
                self._confirmed.add(run_id)
                for listener in list(listeners):
                    listener.on_subscribed()
            return
        if kind != "message" or not listeners:
            return
        raw = message["data"]
        if isinstance(raw, bytes):
            raw = raw.decode()
        try:
            seq, event_type = peek_event(raw)
        except (ValueError, KeyError, TypeError):
            log.error("dropping malformed event on %s", channel)
            return
        terminal = event_type in TERMINAL_EVENT_TYPES
        for listener in list(listeners):
            listener.on_event(seq, raw, terminal)
