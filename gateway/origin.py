"""Cross-site WebSocket hijacking defence: the handshake's ``Origin`` must be one we trust.

Browsers send cookies and other ambient credentials with a WebSocket handshake from any site, and the
same-origin policy does not apply to WebSockets, so the server has to check ``Origin`` itself
(OWASP WebSocket Security Cheat Sheet). Non-browser clients send no ``Origin``; they are let through
because they cannot be tricked into carrying a victim's credentials.

Trusted origins, in order:

- ``CHATGW_ALLOWED_ORIGINS`` (``*`` allows every origin: an explicit opt-out, never the default);
- the gateway's own origin, in dev auth mode, or when the gateway serves its own page (any mode):
  the page it served connects back to where it came from;
- in dev auth mode only, ``http://localhost:*``, ``http://127.0.0.1:*`` and ``http://[::1]:*``: the
  development servers of single-page apps (Vite on :5173, and so on). Dev tokens name any user
  anyway, and dev mode refuses to listen on a public address.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from shared.settings import Settings

ALLOWED_ORIGINS_SETTING = "CHATGW_ALLOWED_ORIGINS"
DEV_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def normalise_origin(origin: str) -> str:
    # Scheme and host are case-insensitive; a trailing slash in a configured origin is a typo.
    return origin.strip().rstrip("/").lower()


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    """``host[:port]`` → (host, port), with the scheme's default port filled in."""
    host, sep, port = netloc.rpartition(":")
    if not sep or host.endswith("[") or (host.count(":") and not host.startswith("[")) or not port.isdigit():
        return netloc, _DEFAULT_PORTS.get(scheme)
    return host, int(port)


class OriginPolicy:
    def __init__(
        self,
        allowed: Iterable[str],
        *,
        own_address: tuple[str, int] | None = None,
        trust_own_origin: bool = False,
        dev_loopback: bool = False,
    ) -> None:
        """``own_address`` is where the gateway listens; a wildcard host (0.0.0.0) means "the Host the
        browser used". ``dev_loopback`` adds the loopback development origins on any port."""
        entries = {normalise_origin(o) for o in allowed if o.strip()}
        self._any = "*" in entries  # an explicit, documented opt-out; never the default
        self._allowed = frozenset(entries - {"*"})
        self._own = own_address if trust_own_origin else None
        self._dev_loopback = dev_loopback

    @classmethod
    def for_settings(cls, settings: Settings, *, serves_page: bool = False) -> OriginPolicy:
        dev = settings.auth == "dev"
        return cls(
            settings.allowed_origins,
            own_address=(settings.host.lower(), settings.port),
            trust_own_origin=dev or serves_page,
            dev_loopback=dev,
        )

    def allows(self, origin: str | None, host: str | None = None) -> bool:
        """``host`` is the handshake's Host header (used when the gateway listens on every address)."""
        if origin is None or self._any:
            return True
        # "null" (sandboxed iframes, file://) only matches when listed literally.
        normalised = normalise_origin(origin)
        if normalised in self._allowed:
            return True
        parts = urlsplit(normalised)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        origin_host, origin_port = _host_port(parts.netloc, parts.scheme)
        if self._dev_loopback and parts.scheme == "http" and origin_host in DEV_LOOPBACK_HOSTS:
            return True
        return self._is_own(parts.scheme, origin_host, origin_port, host)

    def _is_own(self, scheme: str, origin_host: str, origin_port: int | None, host: str | None) -> bool:
        if self._own is None:
            return False
        own_host, own_port = self._own
        if own_host not in _WILDCARD_HOSTS:
            return origin_host == own_host and origin_port == own_port
        if not host:
            return False
        request_host, request_port = _host_port(host.strip().lower(), scheme)
        return (origin_host, origin_port) == (request_host, request_port)

    def describe(self) -> str:
        """One line for the start log: which browser origins may open /ws."""
        if self._any:
            return f"any browser origin may open /ws ({ALLOWED_ORIGINS_SETTING}=*)"
        parts = sorted(self._allowed)
        if self._own is not None:
            parts.append("the gateway's own origin")
        if self._dev_loopback:
            parts.append("http://localhost:*, http://127.0.0.1:* and http://[::1]:* (dev auth mode)")
        if not parts:
            return f"no browser origin may open /ws; list them in {ALLOWED_ORIGINS_SETTING}"
        return "browser origins allowed to open /ws: " + ", ".join(parts)

    @staticmethod
    def refusal_hint(origin: str) -> str:
        return (
            f"add it to {ALLOWED_ORIGINS_SETTING} (comma-separated, e.g. "
            f"{ALLOWED_ORIGINS_SETTING}={normalise_origin(origin)[:100]}) to let that page connect"
        )
