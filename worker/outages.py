"""When this worker process could not reach Redis: so the sweeper can tell why a lease ran out.

A lease that expired while the sweeper itself could not reach Redis was lost to the store, not to a
dead worker: every worker was cut off alike. The sweeper then hands the run on with the reason
``store_unavailable`` (and, out of attempts, fails it with that code) instead of ``worker_lost``.
Nothing has to be written while Redis is down, which is exactly when nothing can be.
"""

from __future__ import annotations

import time
from collections import deque

KEEP_WINDOWS = 32  # older outages no longer matter: their runs have been swept long since


class OutageLog:
    """Windows of Unix time during which this process could not reach Redis."""

    def __init__(self) -> None:
        self._closed: deque[tuple[float, float]] = deque(maxlen=KEEP_WINDOWS)
        self._open_since: float | None = None
        self._last_reached: float | None = None

    def reached(self) -> None:
        """A call just succeeded: an outage in progress is over."""
        now = time.time()
        if self._open_since is not None:
            self._closed.append((self._open_since, now))
            self._open_since = None
        self._last_reached = now

    def failed(self, since: float | None = None) -> None:
        """A call failed (or hung since ``since``): Redis is away since it last answered, at the latest."""
        if self._open_since is None:
            self._open_since = since or self._last_reached or time.time()

    def covers(self, when: float) -> bool:
        """Was Redis unreachable from here at ``when`` (Unix time)?"""
        if self._open_since is not None and when >= self._open_since:
            return True
        return any(start <= when <= end for start, end in self._closed)
