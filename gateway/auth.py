"""Who is on the other end of a socket. Dev mode: the token ``dev:<user>`` names the user."""

from __future__ import annotations

import re

from shared.errors import AuthError
from shared.settings import Settings

_USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when there is no header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'")
    return token.strip()


def authenticate(token: str, settings: Settings) -> str:
    """Return the user a token names, or raise AuthError (never echoing the token)."""
    if settings.auth == "dev":
        prefix, sep, user = token.partition(":")
        if prefix != "dev" or not sep or not _USER_RE.match(user):
            raise AuthError("invalid token: dev mode expects 'dev:<user>' (letters, digits, _.@-)")
        return user
    raise AuthError(f"unsupported auth mode {settings.auth!r}")
