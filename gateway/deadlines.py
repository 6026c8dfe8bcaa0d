"""A socket's three deadlines — authentication, token expiry, idle — on one timer handle.

Tasks cost memory per socket (an idle gateway holds thousands), and sleeping tasks wake for
nothing: one ``loop.call_later`` handle, re-armed for the nearest deadline, does the same work.
:func:`next_deadline` is the pure rule; :class:`SocketDeadlines` only schedules it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import Enum

from gateway.session import Phase, Session


class Expired(Enum):
    AUTH = "auth"
    TOKEN = "token"
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class Due:
    """Either what expired now, or how long until the nearest deadline (never both)."""

    expired: Expired | None = None
    wait_s: float = 0.0


def next_deadline(
    *,
    now: float,
    authenticated: bool,
    auth_deadline: float,
    token_expires_in_s: float | None,
    last_input: float,
    idle_timeout_s: float,
) -> Due:
    """The nearest deadline of a socket (monotonic seconds). Auth is first: an unauthenticated
    socket closes with 4002 even if it was also idle; an authenticated one closes at token expiry
    (4003) before idle (4004) when both are due."""
    candidates: list[tuple[float, Expired]] = []
    if not authenticated:
        candidates.append((auth_deadline - now, Expired.AUTH))
    elif token_expires_in_s is not None:
        candidates.append((token_expires_in_s, Expired.TOKEN))
    candidates.append((last_input + idle_timeout_s - now, Expired.IDLE))
    for remaining, what in candidates:
        if remaining <= 0:
            return Due(expired=what)
    return Due(wait_s=min(remaining for remaining, _ in candidates))


class SocketDeadlines:
    """Closes ``session`` when one of its deadlines passes; :meth:`rearm` after authentication."""

    __slots__ = ("_auth_deadline", "_handle", "_idle_timeout_s", "_loop", "_session")

    def __init__(self, session: Session, *, auth_timeout_s: float, idle_timeout_s: float) -> None:
        self._session = session
        self._loop = asyncio.get_running_loop()
        self._auth_deadline = time.monotonic() + auth_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._handle: asyncio.TimerHandle | None = None
        self.rearm()

    def rearm(self) -> None:
        self.cancel()
        session = self._session
        if session.phase is Phase.CLOSED:
            return
        expires_at = session.expires_at
        due = next_deadline(
            now=time.monotonic(),
            authenticated=session.phase is Phase.READY,
            auth_deadline=self._auth_deadline,
            token_expires_in_s=None if expires_at is None else expires_at - time.time(),
            last_input=session.last_input,
            idle_timeout_s=self._idle_timeout_s,
        )
        if due.expired is Expired.AUTH:
            session.auth_timed_out()
        elif due.expired is Expired.TOKEN:
            session.token_expired()
        elif due.expired is Expired.IDLE:
            session.idle_timed_out()
        else:
            # Input since the last check only pushes the idle deadline later: checked when it fires.
            self._handle = self._loop.call_later(due.wait_s, self.rearm)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
