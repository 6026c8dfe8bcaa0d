"""Cross-site WebSocket hijacking defence: the handshake's ``Origin`` must be one we trust.

Browsers send cookies and other ambient credentials with a WebSocket handshake from any site, and the
same-origin policy does not apply to WebSockets, so the server has to check ``Origin`` itself
(OWASP WebSocket Security Cheat Sheet). Non-browser clients send no ``Origin``; they are let through
because they cannot be tricked into carrying a victim's credentials.
"""

from __future__ import annotations

from collections.abc import Iterable


def normalise_origin(origin: str) -> str:
    # Scheme and host are case-insensitive; a trailing slash in a configured origin is a typo.
    return origin.strip().rstrip("/").lower()


class OriginPolicy:
    def __init__(self, allowed: Iterable[str]) -> None:
        entries = {normalise_origin(o) for o in allowed if o.strip()}
        self._any = "*" in entries  # an explicit, documented opt-out; never the default
        self._allowed = frozenset(entries - {"*"})

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return True
        if self._any:
            return True
        # "null" (sandboxed iframes, file://) only matches when listed literally.
        return normalise_origin(origin) in self._allowed
