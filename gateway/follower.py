"""A socket following one run: replays the log after a seq, then relays live events, no gap, no dup.

Algorithm: subscribe first (through the hub), and on every subscription confirmation read the log
after the last seq sent; live events that arrive meanwhile wait in the cursor. A hole in the live
stream (pub/sub dropped a message) triggers another log read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.cursor import RunCursor
from gateway.latency import RunTiming
from shared.errors import StoreUnavailable
from shared.protocol import TERMINAL_EVENT_TYPES, peek_event
from shared.runstore import RunStore

log = logging.getLogger(__name__)


class Follower:
    def __init__(
        self,
        run_id: str,
        after_seq: int,
        *,
        store: RunStore,
        send: Callable[[str], None],
        send_wait: Callable[[str], Awaitable[bool]],
        on_finished: Callable[[Follower], None],
        page_size: int = 256,
    ) -> None:
        self.run_id = run_id
        self.cursor = RunCursor(last_seq=after_seq)
        self._store = store
        self._send = send
        self._send_wait = send_wait
        self._page_size = page_size
        self._on_finished = on_finished
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._closed = False  # finished or closed: ignore pub/sub from now on
        self._stopped = False  # closed from outside (socket gone, unfollowed): stop sending too
        self.timing: RunTiming | None = None  # latencies the session times on this run, if any

    # -- HubListener

    def on_event(self, seq: int, raw: str, terminal: bool) -> None:
        if self._closed:
            return
        frames, need_log = self.cursor.on_live(seq, raw, terminal)
        self._emit(frames)
        if need_log:
            self._request_log_read()

    def on_subscribed(self) -> None:
        if not self._closed:
            self._request_log_read()

    # --

    def close(self) -> None:
        self._closed = self._stopped = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _emit(self, frames: list[str]) -> None:
        for frame in frames:
            self._send(frame)
        self._timed(frames)
        if self.cursor.finished and not self._closed:
            self._closed = True
            self._on_finished(self)

    def _timed(self, frames: list[str]) -> None:
        """Per batch, and only while the session times something on this run."""
        if self.timing is not None and frames and self.timing.sent(frames, self.cursor.finished):
            self.timing = None

    def _request_log_read(self) -> None:
        self.cursor.syncing = True
        if self._task is not None and not self._task.done():
            self._again = True  # the read under way may have started before this confirmation
            return
        self._task = asyncio.create_task(self._read_log(), name=f"follow-{self.run_id}")

    async def _read_log(self) -> None:
        delay = 0.05
        while not self._closed:
            self._again = False
            try:
                entries = await self._store.read_log(self.run_id, self.cursor.last_seq, count=self._page_size)
            except StoreUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            decorated = []
            for seq, raw in entries:
                _, event_type = peek_event(raw)
                decorated.append((seq, raw, event_type in TERMINAL_EVENT_TYPES))
            frames, read_again = self.cursor.on_log(decorated, more=len(entries) >= self._page_size)
            # A replay waits for room in the socket's queue (the client is catching up, page by page);
            # only live traffic that outruns a client counts as a slow consumer. Live events that
            # arrive meanwhile wait in the cursor, so nothing overtakes the replay.
            finished = self.cursor.finished
            self.cursor.syncing = not finished
            for frame in frames:
                # Not _closed: the terminal event of this very page may arrive live meanwhile and
                # finish the follower; the rest of the page must still go out.
                if self._stopped or not await self._send_wait(frame):
                    return
            self._timed(frames)
            if not finished and not read_again and not self._again:
                # Hand over to live delivery with no await in between: what arrived is sent in order.
                tail, read_again = self.cursor.on_log([])
                for frame in tail:
                    self._send(frame)
                self._timed(tail)
            self._emit([])
            if self._closed or not (read_again or self._again):
                return
            self.cursor.syncing = True
