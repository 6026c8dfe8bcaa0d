"""Notices within seconds that Redis is gone, and when it is back, so that no socket stays silent.

Every ``interval_s`` the gateway PINGs Redis on a connection of its own (a busy command pool must not
look like an outage). Redis counts as lost once no probe has succeeded for ``grace_s`` and the
latest one failed (a blip, or a pub/sub reconnect, is not an outage), and as back at the first
success. With the defaults the loss is declared 3 to 4 s after Redis stops answering.
:class:`Availability` is the pure rule; :class:`StoreWatch` runs the probes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from enum import Enum

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 1.5
GRACE_S = 3.0


class Change(Enum):
    LOST = "lost"
    BACK = "back"


class Availability:
    def __init__(self, *, grace_s: float, now: float) -> None:
        self._grace_s = grace_s
        self._last_ok = now
        self.up = True

    def observe(self, ok: bool, now: float) -> Change | None:
        """Record one probe's outcome; returns the change it makes, if any."""
        if ok:
            self._last_ok = now
            if not self.up:
                self.up = True
                return Change.BACK
            return None
        if self.up and now - self._last_ok >= self._grace_s:
            self.up = False
            return Change.LOST
        return None


class StoreWatch:
    def __init__(
        self,
        probe: Callable[[], Awaitable[object]],
        *,
        on_lost: Callable[[], None],
        on_back: Callable[[], None],
        interval_s: float = PROBE_INTERVAL_S,
        timeout_s: float = PROBE_TIMEOUT_S,
        grace_s: float = GRACE_S,
    ) -> None:
        self._probe = probe
        self._on_lost = on_lost
        self._on_back = on_back
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._grace_s = grace_s
        self._availability: Availability | None = None

    @property
    def available(self) -> bool:
        return self._availability is None or self._availability.up

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        availability = self._availability = Availability(grace_s=self._grace_s, now=loop.time())
        while True:
            started = loop.time()
            try:
                await asyncio.wait_for(self._probe(), self._timeout_s)
                ok = True
            except asyncio.CancelledError:
                raise
            except Exception:
                ok = False
            change = availability.observe(ok, loop.time())
            if change is Change.LOST:
                log.warning("Redis unreachable for %.0f s: closing every socket with 1013", self._grace_s)
                self._on_lost()
            elif change is Change.BACK:
                log.warning("Redis answers again")
                self._on_back()
            await asyncio.sleep(max(0.0, started + self._interval_s - loop.time()))
