"""Writes one attempt's events to the run's log, in order, riding out short Redis outages.

Tokens are **coalesced**, Nagle-style: a token leaves at once when no append of this run is on its
way (no latency added on an idle system); tokens produced while one is on its way are joined into
the next ``token`` event. A slow Redis therefore means fewer, larger events instead of a queue of
small ones, and the concatenation of the ``token`` texts is unchanged. Appends go through the
process's :class:`~worker.appender.Appender`, so many runs share each round trip.

Every event carries an event id (attempt:count), so an append retried after an outage is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from shared.errors import StoreUnavailable
from shared.protocol import EVENT_STATUS, event_body
from shared.runstore import AppendRefused, AppendRequest, Claim
from worker.appender import Appender, Outcome

log = logging.getLogger(__name__)

# A model that outruns Redis waits once this many tokens are buffered (backpressure).
MAX_BUFFERED_TOKENS = 512


class RunLost(Exception):
    """This attempt may no longer write: the run ended elsewhere or was handed to another worker."""


class RunEmitter:
    def __init__(self, appender: Appender, claim: Claim, *, outage_budget_s: float = 30.0) -> None:
        self._appender = appender
        self._claim = claim
        self._outage_budget_s = outage_budget_s
        self._count = 0
        # Waiting for the append on its way, in order: events (requests) and tokens (texts, joined
        # into one event when they leave together).
        self._queued: list[AppendRequest | str] = []
        self._buffered_tokens = 0
        self._in_flight: AppendRequest | None = None
        self._in_flight_text: str | None = None  # the token text of the append on its way
        self._written: list[str] = []  # token texts in the log, in order
        self._failure: Exception | None = None
        self._outage_started: float | None = None
        self._retry_delay_s = 0.05
        self._idle: asyncio.Future[None] | None = None
        self.tokens = 0  # tokens received from the model

    @property
    def content(self) -> str:
        """Exactly the text of the ``token`` events written so far."""
        return "".join(self._written)

    def post(self, event_type: str, fields: dict[str, Any] | None = None) -> None:
        """Queue one event behind everything before it, without waiting for it to be written (a
        failure surfaces at the next token, ``flush`` or ``emit``)."""
        if self._failure is not None:
            raise self._failure
        self._enqueue(self._request(event_type, fields or {}))

    async def emit(self, event_type: str, fields: dict[str, Any] | None = None) -> None:
        """Write one event after everything before it; raise RunLost or StoreUnavailable."""
        self.post(event_type, fields)
        await self.flush()

    async def token(self, text: str) -> None:
        if self._failure is not None:
            raise self._failure
        self.tokens += 1
        self._enqueue(text)
        if self._buffered_tokens >= MAX_BUFFERED_TOKENS:
            await self.flush()

    async def flush(self) -> None:
        """Wait until everything queued is written; raise the failure that stopped writing."""
        while self._in_flight is not None:
            if self._idle is None or self._idle.done():
                self._idle = asyncio.get_running_loop().create_future()
            await self._idle
        if self._failure is not None:
            raise self._failure

    # -- internals (callbacks on the event loop)

    def _request(self, event_type: str, fields: dict[str, Any]) -> AppendRequest:
        claim = self._claim
        self._count += 1
        return AppendRequest(
            run_id=claim.run_id,
            conversation_id=claim.conversation_id,
            attempt=claim.attempt,
            body=event_body(event_type, claim.run_id, claim.conversation_id, time.time(), **fields),
            terminal_status=EVENT_STATUS.get(event_type, ""),
            event_id=f"{claim.attempt}:{self._count}",
        )

    def _enqueue(self, item: AppendRequest | str) -> None:
        if self._in_flight is None:
            self._send(item)
            return
        self._queued.append(item)
        if isinstance(item, str):
            self._buffered_tokens += 1

    def _send(self, item: AppendRequest | str) -> None:
        if isinstance(item, str):
            self._in_flight_text = item
            self._in_flight = self._request("token", {"text": item})
        else:
            self._in_flight_text, self._in_flight = None, item
        self._appender.submit(self._in_flight).add_done_callback(self._on_written)

    def _send_next(self) -> None:
        """Send what waited: consecutive tokens at the head leave together, as one event."""
        queued = self._queued
        if isinstance(queued[0], str):
            end = 1
            while end < len(queued) and isinstance(queued[end], str):
                end += 1
            texts = queued[:end]
            del queued[:end]
            self._buffered_tokens -= end
            self._send("".join(texts))  # type: ignore[arg-type]  # all str, checked above
        else:
            self._send(queued.pop(0))

    def _resubmit(self) -> None:
        if self._in_flight is not None and self._failure is None:
            self._appender.submit(self._in_flight).add_done_callback(self._on_written)

    def _on_written(self, future: asyncio.Future[Outcome]) -> None:
        try:
            outcome = future.result()
        except Exception as exc:
            self._fail(exc)
            return
        if isinstance(outcome, StoreUnavailable):
            self._retry_later(outcome)
            return
        if isinstance(outcome, AppendRefused):
            self._fail(RunLost(f"run {self._claim.run_id}: {outcome.reason}"))
            return
        self._outage_started, self._retry_delay_s = None, 0.05
        if self._in_flight_text is not None:
            self._written.append(self._in_flight_text)
        self._in_flight = self._in_flight_text = None
        if self._queued:
            self._send_next()
        else:
            self._wake()

    def _retry_later(self, outage: StoreUnavailable) -> None:
        # Safe to retry: the event id makes the append idempotent if the first try did land.
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._outage_started is None:
            self._outage_started = now
            log.warning("Redis unavailable; retrying the appends of run %s", self._claim.run_id)
        if now - self._outage_started >= self._outage_budget_s:
            self._fail(outage)
            return
        loop.call_later(self._retry_delay_s, self._resubmit)
        self._retry_delay_s = min(self._retry_delay_s * 2, 1.0)

    def _fail(self, exc: Exception) -> None:
        self._failure = exc
        self._in_flight = self._in_flight_text = None
        self._queued.clear()
        self._buffered_tokens = 0
        self._wake()

    def _wake(self) -> None:
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
