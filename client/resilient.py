"""A client that never shows its application a reconnect: it reconnects with jittered backoff (to the
next gateway URL in its list) and resumes every run it follows from the last seq it saw, dropping
duplicates, so each run's events arrive complete, in order, once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from client.connection import OnBusy

log = logging.getLogger(__name__)

TERMINAL = frozenset({"run.completed", "run.stopped", "run.failed"})
FATAL_CLOSE_CODES = frozenset({4001, 4003})  # bad or expired token: reconnecting cannot help
# Every other close (1012 restart, 1013 Redis unavailable, 4008 slow, network loss, ...) reconnects
# with jittered exponential backoff and resumes; backoff resets only once real frames flow again.


class ClientError(Exception):
    """The gateway refused a request (``code`` is the wire error code) or the client gave up."""

    def __init__(self, message: str, code: str = "client_error", frame: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.frame = frame or {}


@dataclass(frozen=True)
class ConnectionState:
    """What the client is doing, for an application that shows it (``on_state``; e.g. `chatgw chat`)."""

    status: Literal["connecting", "connected", "waiting", "refused"]
    url: str
    retry_in_s: float | None = None  # waiting: the next attempt starts in this long
    resuming: int = 0  # connected: runs being resumed on this connection
    reason: str | None = None  # waiting or refused: why the last attempt or connection ended


@dataclass
class FollowedRun:
    run_id: str
    after_seq: int = 0  # where following started: events before it were seen elsewhere
    events: list[dict[str, Any]] = field(default_factory=list)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last_seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else self.after_seq

    @property
    def terminal(self) -> dict[str, Any] | None:
        return self.events[-1] if self.events and self.events[-1]["type"] in TERMINAL else None

    @property
    def attempt_tokens(self) -> list[str]:
        """Tokens of the current (last) attempt: a run.retrying discards what came before it."""
        tokens: list[str] = []
        for event in self.events:
            if event["type"] == "run.retrying":
                tokens = []
            elif event["type"] == "token":
                tokens.append(event["text"])
        return tokens

    @property
    def text(self) -> str:
        return "".join(self.attempt_tokens)


class ResilientClient:
    def __init__(
        self,
        urls: Sequence[str],
        token: str,
        *,
        initial_backoff_s: float = 0.05,
        max_backoff_s: float = 3.0,
        connect_timeout_s: float = 5.0,
        on_state: Callable[[ConnectionState], None] | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one gateway URL is needed")
        self._urls = itertools.cycle(list(urls))
        self._token = token
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._connect_timeout_s = connect_timeout_s
        self._on_state = on_state or (lambda state: None)
        self.runs: dict[str, FollowedRun] = {}
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._pending_frames: dict[str, dict[str, Any]] = {}  # re-sent after a reconnect
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._fatal: ClientError | None = None
        self.reconnects = 0
        self.close_codes: list[int | None] = []

    async def __aenter__(self) -> ResilientClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="chatgw-client")
        await self._wait_connected(self._connect_timeout_s * 4)

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()

    # ------------------------------------------------------------------ requests

    async def chat(
        self,
        content: str,
        conversation_id: str | None = None,
        timeout: float = 15.0,
        on_busy: OnBusy | None = None,
    ) -> dict[str, Any]:
        """Start a run and follow it; returns the run.accepted frame. ``on_busy``: what to do if the
        conversation has a run in flight (reject, interrupt, enqueue); None: the server's default."""
        frame: dict[str, Any] = {"type": "chat", "content": content}
        if conversation_id:
            frame["conversation_id"] = conversation_id
        if on_busy:
            frame["on_busy"] = on_busy
        return await self._request(frame, timeout)  # _on_frame starts following at run.accepted

    async def stop(self, run_id: str, timeout: float = 15.0) -> dict[str, Any]:
        return await self._request({"type": "stop", "run_id": run_id}, timeout)

    def follow(self, run_id: str, after_seq: int = 0) -> FollowedRun:
        """Follow a run (e.g. one started in an earlier session) from ``after_seq``."""
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = FollowedRun(run_id, after_seq)
            if after_seq or self._ws is not None:
                self._send_soon({"type": "resume", "run_id": run_id, "after_seq": after_seq})
        return run

    async def events(self, run_id: str, timeout: float = 60.0) -> AsyncIterator[dict[str, Any]]:
        run = self.follow(run_id)
        index = 0
        while True:
            while index < len(run.events):
                event = run.events[index]
                index += 1
                yield event
                if event["type"] in TERMINAL:
                    return
            await asyncio.wait_for(run.queue.get(), timeout)

    async def wait(self, run_id: str, timeout: float = 60.0) -> FollowedRun:
        run = self.follow(run_id)
        await asyncio.wait_for(run.done.wait(), timeout)
        return run

    async def _request(self, frame: dict[str, Any], timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ref = uuid.uuid4().hex
        frame = {**frame, "id": ref}
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[ref] = future
        self._pending_frames[ref] = frame
        try:
            # While disconnected, the supervisor sends pending frames as it reconnects; and if the
            # connection drops before the reply, it sends them again: the gateway treats a chat with
            # the same id and content as the same chat, and stop is idempotent.
            if self._ws is not None and self._connected.is_set():
                with contextlib.suppress(ConnectionClosed):
                    await self._ws.send(orjson.dumps(frame).decode())
            else:
                await self._wait_connected(deadline - loop.time())
            reply = await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
        finally:
            self._pending.pop(ref, None)
            self._pending_frames.pop(ref, None)
        if reply.get("type") == "error":
            raise ClientError(reply.get("message", ""), reply.get("code", "error"), reply)
        return reply

    # ------------------------------------------------------------------ connection

    async def _wait_connected(self, timeout: float) -> None:
        if self._fatal is not None:
            raise self._fatal
        await asyncio.wait_for(self._connected.wait(), max(0.0, timeout))
        if self._fatal is not None:
            raise self._fatal

    def _send_soon(self, frame: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            return  # sent on reconnect with the resume of every followed run
        task = asyncio.get_running_loop().create_task(ws.send(orjson.dumps(frame).decode()))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _supervise(self) -> None:
        backoff = self._initial_backoff_s
        while True:
            url = next(self._urls)
            self._on_state(ConnectionState("connecting", url))
            try:
                ws = await asyncio.wait_for(
                    connect(
                        url, additional_headers={"Authorization": f"Bearer {self._token}"}, max_size=None
                    ),
                    self._connect_timeout_s,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidStatus) as exc:
                log.debug("connect to %s failed: %s", url, exc)
                delay = backoff * (0.5 + random.random())
                self._on_state(ConnectionState("waiting", url, delay, reason=str(exc) or type(exc).__name__))
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            self._ws = ws
            try:
                resuming = [run for run in self.runs.values() if run.terminal is None]
                for run in resuming:
                    resume = {"type": "resume", "run_id": run.run_id, "after_seq": run.last_seq}
                    await ws.send(orjson.dumps(resume).decode())
                for frame in list(self._pending_frames.values()):
                    await ws.send(orjson.dumps(frame).decode())
                self._connected.set()
                self._on_state(ConnectionState("connected", url, resuming=len(resuming)))
                async for message in ws:
                    frame = orjson.loads(message)
                    if frame.get("type") != "error":
                        # A working connection. An error is not proof of one: while Redis is down the
                        # gateway answers every new socket with `unavailable` + 1013.
                        backoff = self._initial_backoff_s
                    self._on_frame(frame)
            except ConnectionClosed:
                pass
            finally:
                self._connected.clear()
                self._ws = None
            code = ws.close_code
            self.close_codes.append(code)
            if code in FATAL_CLOSE_CODES:
                self._fatal = ClientError(f"connection refused by the gateway (close {code})", "unauthorized")
                self._on_state(ConnectionState("refused", url, reason=ws.close_reason or f"close {code}"))
                self._connected.set()  # wake waiters so they see the error
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(self._fatal)
                return
            self.reconnects += 1
            delay = backoff * (0.5 + random.random())
            self._on_state(ConnectionState("waiting", url, delay, reason=f"connection closed ({code})"))
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, self._max_backoff_s)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        if "seq" in frame:
            run = self.runs.get(frame["run_id"])
            if run is None or run.terminal is not None:
                return
            seq = int(frame["seq"])
            if seq <= run.last_seq:
                return  # a duplicate from an overlapping replay
            if seq != run.last_seq + 1:
                # Should not happen (the gateway fills gaps); ask again rather than skip.
                self._send_soon({"type": "resume", "run_id": run.run_id, "after_seq": run.last_seq})
                return
            run.events.append(frame)
            run.queue.put_nowait(frame)
            if frame["type"] in TERMINAL:
                run.done.set()
            return
        if frame.get("type") == "run.accepted":
            # Register before anything else is read: the run's events follow right behind.
            self.runs.setdefault(frame["run_id"], FollowedRun(frame["run_id"]))
        future = self._pending.get(str(frame.get("id")))
        if future is not None and not future.done():
            future.set_result(frame)
        elif frame.get("type") == "error" and frame.get("run_id") in self.runs:
            run = self.runs[frame["run_id"]]
            log.warning("run %s: %s", run.run_id, frame.get("message"))
        elif frame.get("type") == "error":
            # E.g. `unavailable` before close 1013 (the gateway lost Redis): the close that follows
            # makes the supervisor reconnect with backoff and resume every run.
            log.info("gateway: %s (%s)", frame.get("message"), frame.get("code"))
