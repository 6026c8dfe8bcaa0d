"""`chatgw token --user NAME [--ttl SECONDS]`: a token the configured gateway accepts.

``CHATGW_AUTH=dev``: prints ``dev:NAME``. ``CHATGW_AUTH=jwt``: prints an HS256 JWT signed with
``CHATGW_JWT_SECRET`` (with ``aud``/``iss`` when configured). For tests and local use: production
tokens come from an identity provider, and asymmetric keys never live on the gateway.
"""

from __future__ import annotations

import argparse
import time

import jwt

from gateway.auth import USER_RE
from shared.errors import ConfigError
from shared.settings import Settings

DEFAULT_TTL_S = 3600
MAX_TTL_S = 30 * 24 * 3600


def mint(settings: Settings, user: str, ttl_s: int = DEFAULT_TTL_S, *, now: float | None = None) -> str:
    if not USER_RE.match(user):
        raise ConfigError(f"--user must be 1-64 letters, digits or _.@- (got {user!r})")
    if settings.auth == "dev":
        return f"dev:{user}"
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise ConfigError(f"--ttl must be between 1 and {MAX_TTL_S} seconds")
    if settings.jwt_secret is None:
        raise ConfigError("chatgw token signs HS256 tokens: set CHATGW_JWT_SECRET")
    if "HS256" not in settings.jwt_algorithms:
        raise ConfigError("CHATGW_JWT_ALGORITHMS does not allow HS256: the gateway would refuse the token")
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": user, "iat": issued, "exp": issued + ttl_s}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    print(mint(settings, args.user, args.ttl))
    return 0
