"""A socket's bounded outbound queue. Overflow means the client is too slow: it is disconnected
with close code 4008 and, since every event is in the run's log, resumes without loss."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.errors import CloseCode


@dataclass(frozen=True, slots=True)
class CloseRequest:
    code: int
    reason: str
    flush: bool  # send what is queued first (e.g. an error frame explaining the close)


class Outbox:
    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=maxsize)
        self.close_request: CloseRequest | None = None
        self.closing = asyncio.Event()

    def put(self, frame: str) -> None:
        if self.close_request is not None:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outbound queue full; reconnect and resume")

    async def put_wait(self, frame: str, timeout_s: float = 30.0) -> bool:
        """Queue a frame, waiting for room; a client that frees none within ``timeout_s`` is slow."""
        if self.close_request is not None:
            return False
        try:
            await asyncio.wait_for(self._queue.put(frame), timeout_s)
        except TimeoutError:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outbound queue full; reconnect and resume")
            return False
        return self.close_request is None

    def close(self, code: int, reason: str, *, flush: bool = False) -> None:
        if self.close_request is None:
            self.close_request = CloseRequest(code, reason, flush)
            self.closing.set()

    async def get(self) -> str:
        return await self._queue.get()

    def drain(self) -> list[str]:
        frames = []
        while not self._queue.empty():
            frames.append(self._queue.get_nowait())
        return frames

    def qsize(self) -> int:
        return self._queue.qsize()
