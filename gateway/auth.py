"""Who is on the other end of a socket.

``CHATGW_AUTH=dev``: the token ``dev:<user>`` names the user (local use only); ``dev:<user>:<tier>``
also names their tier (docs/tiers.md). In JWT mode the tier is the ``CHATGW_JWT_TIER_CLAIM`` claim.
Without one, a user gets ``CHATGW_DEFAULT_TIER``; a tier the deployment does not have is refused.
``CHATGW_AUTH=jwt``: a signed JWT; HS* with ``CHATGW_JWT_SECRET``, RS*/PS*/ES* with a PEM public key
or a local JWKS file (key chosen by ``kid``). ``exp`` and ``sub`` are required; ``aud``/``iss`` are
checked when configured. Error messages never contain the token.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from shared.errors import AuthError, ConfigError
from shared.settings import Settings
from shared.tiers import DEFAULT_TIER, Tiers, parse_dev_token

log = logging.getLogger(__name__)

# A user name ends up inside Redis key names: no ':' and nothing exotic.
USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key must be at least 256 bits


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    expires_at: float | None  # Unix time of the token's exp; None for dev tokens
    tier: str = DEFAULT_TIER  # one of CHATGW_TIERS


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when there is no header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'")
    return token.strip()


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


class Authenticator:
    """Built once at gateway start: a broken key or setting fails the start, not the first login."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.auth
        self.tiers = Tiers(settings)
        self._jwt = JwtVerifier(settings, self.tiers) if settings.auth == "jwt" else None
        if settings.auth == "dev":
            _check_dev_mode(settings)

    def authenticate(self, token: str) -> Identity:
        """Return who a token names, or raise AuthError (never echoing the token)."""
        if self._jwt is not None:
            return self._jwt.verify(token)
        parsed = parse_dev_token(token)
        if parsed is None or not USER_RE.match(parsed[0]):
            raise AuthError(
                "invalid token: dev mode expects 'dev:<user>' or 'dev:<user>:<tier>' (letters, digits, _.@-)"
            )
        user, tier = parsed
        return Identity(user, None, check_tier(self.tiers, tier))


def check_tier(tiers: Tiers, tier: object) -> str:
    """The tier a token names (None: the default), or AuthError for one this deployment lacks."""
    if tier is None:
        return tiers.default
    if not isinstance(tier, str) or not tiers.known(tier):
        raise AuthError(f"invalid token: unknown tier; this deployment has {', '.join(tiers.names)}")
    return tier


def _check_dev_mode(settings: Settings) -> None:
    # Dev tokens are not secrets: anyone who can reach the port can be anyone.
    if not is_loopback(settings.host) and not settings.dev_auth_allow_nonlocal:
        raise ConfigError(
            f"CHATGW_AUTH=dev lets anyone claim any user, and CHATGW_HOST={settings.host} is not a "
            "loopback address: set CHATGW_AUTH=jwt, or CHATGW_DEV_AUTH_ALLOW_NONLOCAL=true if you "
            "really mean it"
        )
    log.warning(
        "!!! CHATGW_AUTH=dev: tokens 'dev:<user>' are NOT secret; anyone who reaches %s:%s can act as "
        "any user. Use CHATGW_AUTH=jwt outside local development. !!!",
        settings.host,
        settings.port,
    )


class JwtVerifier:
    def __init__(self, settings: Settings, tiers: Tiers | None = None) -> None:
        self.tiers = tiers or Tiers(settings)
        self.tier_claim = settings.jwt_tier_claim
        self.algorithms = frozenset(settings.jwt_algorithms)
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self._secret = settings.jwt_secret.get_secret_value().encode() if settings.jwt_secret else None
        self._public_key = _load_public_key(settings) if settings.jwt_public_key_file else None
        self._jwks = _load_jwks(settings) if settings.jwt_jwks_file else None
        self._check_algorithms()
        required = ["exp", "sub"]
        required += ["aud"] if self.audience else []
        required += ["iss"] if self.issuer else []
        self._options: jwt.types.Options = {"require": required}

    def _check_algorithms(self) -> None:
        bad = sorted(a for a in self.algorithms if a not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS)
        if bad or not self.algorithms:
            # Covers "none": an unsigned token must never be accepted.
            raise ConfigError(
                f"CHATGW_JWT_ALGORITHMS: unsupported {bad or 'empty list'}; use e.g. HS256, RS256, ES256"
            )
        if self.algorithms & HMAC_ALGORITHMS and self._secret is None:
            raise ConfigError("CHATGW_JWT_ALGORITHMS lists an HS* algorithm but CHATGW_JWT_SECRET is not set")
        if self._secret is not None and len(self._secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"CHATGW_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        if self.algorithms & ASYMMETRIC_ALGORITHMS and self._public_key is None and self._jwks is None:
            raise ConfigError(
                "CHATGW_JWT_ALGORITHMS lists an asymmetric algorithm but neither "
                "CHATGW_JWT_PUBLIC_KEY_FILE nor CHATGW_JWT_JWKS_FILE is set"
            )

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid token: not a JWT") from None
        alg = header.get("alg")
        # The header picks the algorithm, so pin the key to it: an HMAC check is never run with a
        # public key as its secret (algorithm confusion), and "none" is never in the list.
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError("invalid token: algorithm not allowed")
        key = self._key_for(alg, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                options=self._options,
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("invalid token: audience refused") from None
        except jwt.InvalidIssuerError:
            raise AuthError("invalid token: issuer refused") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"invalid token: the {exc.claim} claim is required") from None
        except jwt.InvalidSignatureError:
            raise AuthError("invalid token: bad signature") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            # TypeError/ValueError: a key of the wrong type for the algorithm, a malformed claim.
            raise AuthError("invalid token") from None
        user = claims.get("sub")
        if not isinstance(user, str) or not USER_RE.match(user):
            raise AuthError("invalid token: sub must be 1-64 letters, digits or _.@-")
        exp = claims["exp"]
        return Identity(user, float(exp), check_tier(self.tiers, claims.get(self.tier_claim)))

    def _key_for(self, alg: str, kid: object) -> Any:
        if alg in HMAC_ALGORITHMS:
            return self._secret
        if self._jwks is not None:
            return self._jwk_for(alg, kid)
        return self._public_key

    def _jwk_for(self, alg: str, kid: object) -> Any:
        assert self._jwks is not None
        if isinstance(kid, str):
            found = next((k for k in self._jwks if k.kid == kid), None)
        else:
            found = self._jwks[0] if len(self._jwks) == 1 else None  # no kid: unambiguous with one key
        if found is None:
            raise AuthError("invalid token: unknown key id")
        if found.alg is not None and found.alg != alg:
            raise AuthError("invalid token: algorithm does not match the key")
        return found.key


@dataclass(frozen=True, slots=True)
class Jwk:
    kid: str | None
    alg: str | None  # the key's declared "alg", when it has one
    key: Any


def _load_public_key(settings: Settings) -> Any:
    path = settings.jwt_public_key_file
    assert path is not None
    try:
        return load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"CHATGW_JWT_PUBLIC_KEY_FILE: cannot load a PEM public key from {path}: {exc}"
        ) from None


def _load_jwks(settings: Settings) -> list[Jwk]:
    path = settings.jwt_jwks_file
    assert path is not None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = document["keys"]
        assert isinstance(entries, list)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise ConfigError(f'CHATGW_JWT_JWKS_FILE: {path} is not a JWKS ({{"keys": [...]}})') from None
    keys = []
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
            # Symmetric keys in a JWKS would make any holder of the file a token issuer.
            log.warning("CHATGW_JWT_JWKS_FILE: skipping key %r (not a public signing key)", kid)
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            log.warning("CHATGW_JWT_JWKS_FILE: skipping key %r: %s", kid, type(exc).__name__)
            continue
        alg = entry.get("alg")
        keys.append(
            Jwk(kid if isinstance(kid, str) else None, alg if isinstance(alg, str) else None, jwk.key)
        )
    if not keys:
        raise ConfigError(f"CHATGW_JWT_JWKS_FILE: {path} holds no usable public signing key")
    return keys
