"""uvicorn's HTTP protocol with two guards it lacks: a deadline on the request head, and a
connection cap that answers 503 at once.

- **Handshake timeout.** A connection must deliver a complete request head (for ``/ws``: the whole
  upgrade request) within ``handshake_timeout_s`` of opening, or of starting a new request on a
  kept-alive connection; otherwise it is closed. uvicorn's keep-alive timer stops at the first byte
  received, so without this a client that sends half a request holds its connection (and a file
  descriptor) forever, and the WebSocket auth timeout never starts.
- **Connection cap.** Beyond ``max_connections`` open connections (HTTP and WebSocket) in this
  process, a new connection gets ``503 Service Unavailable`` the moment it opens, without reading its
  request. (uvicorn's own ``limit_concurrency`` does not apply to WebSocket upgrades.)
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

REFUSAL_LINGER_S = 1.0  # after a 503, how long the refused request may still arrive before the close

_OVER_CAPACITY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 40\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"gateway at its connection limit; retry\r\n"
)


class GuardedHttpProtocol(HttpToolsProtocol):
    """Use :func:`guarded_http_protocol` to get a subclass with the limits set."""

    handshake_timeout_s: float = 10.0
    max_connections: int = 15_000
    refused = 0  # connections answered 503 by this process (class-wide counter, for logs and tests)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._over_capacity = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over = len(self.connections) >= self.max_connections
        super().connection_made(transport)
        if over:
            self._refuse(transport)
            return
        self._arm_head_timer()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._over_capacity = True
        self.connections.discard(self)  # a refused connection does not count against the cap
        type(self).refused += 1
        if type(self).refused in (1, 10, 100) or type(self).refused % 1000 == 0:
            log.warning(
                "connection limit (%d) reached: %d connections refused with 503",
                self.max_connections,
                type(self).refused,
            )
        transport.write(_OVER_CAPACITY)
        # Half-close and let the request arrive before closing: closing a socket with unread data
        # sends a reset, which can destroy the 503 before the client reads it.
        if transport.can_write_eof():
            transport.write_eof()
        self._head_timer = self.loop.call_later(REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._over_capacity:
            return  # the answer is already sent; the request is read only to be discarded
        super().data_received(data)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._over_capacity:
            self.transport.close()
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    # Parser callbacks: the deadline covers each request head, from its first byte to its end.

    def on_message_begin(self) -> None:
        self._arm_head_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.handshake_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def guarded_http_protocol(*, handshake_timeout_s: float, max_connections: int) -> type[GuardedHttpProtocol]:
    """The protocol class to pass to ``uvicorn.Config(http=...)``."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"handshake_timeout_s": handshake_timeout_s, "max_connections": max_connections, "refused": 0},
    )


FD_HEADROOM = 1024  # Redis pools, the listening socket, logs, imports


def ensure_fd_room(max_connections: int) -> None:
    """Raise this process's open-file limit so that ``max_connections`` fit (up to the hard limit);
    warn when they cannot, since accept() failing on EMFILE is worse than a clean 503."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "CHATGW_MAX_CONNECTIONS=%d needs about %d open files, but the limit is %d: "
            "raise it (ulimit -n / LimitNOFILE) or lower CHATGW_MAX_CONNECTIONS",
            max_connections,
            wanted,
            soft,
        )
