"""Group commit for run events: every append of every run in one loop tick goes out as one pipeline.

A worker process streams many runs at once; sending each token's append as its own round trip costs a
syscall pair and a Redis request per token. The appender collects the appends submitted during one
pass of the event loop and sends them together. With nothing else queued, an append leaves on the
next loop iteration: no timer, so no latency is added when idle. While ``max_in_flight`` batches are
already on their way, new appends wait for one of them to return and then leave together.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from shared.errors import StoreUnavailable
from shared.runstore import AppendRefused, AppendRequest, RunStore

log = logging.getLogger(__name__)

Outcome = int | AppendRefused | StoreUnavailable
_NO_RUN = contextvars.Context()  # the appender's own callbacks run outside any run's log context


class Appender:
    def __init__(self, store: RunStore, *, max_in_flight: int = 4, max_batch: int = 512) -> None:
        self._store = store
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._queue: list[tuple[AppendRequest, asyncio.Future[Outcome]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, request: AppendRequest) -> asyncio.Future[Outcome]:
        """Queue one append; the future resolves to its seq or to the refusal/outage (never raises)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.append((request, future))
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            loop.call_soon(self._send_queued, context=_NO_RUN)
        return future

    def _send_queued(self) -> None:
        self._scheduled = False
        while self._queue and self._in_flight < self._max_in_flight:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            self._in_flight += 1
            # A batch serves many runs: its log lines must not carry the run that happened to start it.
            task = asyncio.get_running_loop().create_task(self._send(batch), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[AppendRequest, asyncio.Future[Outcome]]]) -> None:
        try:
            outcomes: list[Outcome] = await self._store.append_batch([request for request, _ in batch])
        except Exception as exc:  # a bug, not an outage: fail these appends loudly, keep the appender
            log.exception("append batch failed")
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():  # a waiter may have been cancelled
                    future.set_result(outcome)
        finally:
            self._in_flight -= 1
            if self._queue and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._send_queued, context=_NO_RUN)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
