"""Authentication: dev tokens, JWT (HS256, RS256/ES256 from PEM or JWKS), the Origin policy, and
`chatgw token`. Every refusal is an AuthError whose message never contains the token."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cli.main import main
from cli.token import mint
from gateway.auth import Authenticator, Identity, bearer_token, is_loopback
from gateway.origin import OriginPolicy
from shared.errors import AuthError, ConfigError
from shared.settings import Settings, load_settings

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret!"  # ≥ 32 bytes
OTHER_SECRET = "another-secret-another-secret-another"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CHATGW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env


def settings(**overrides: Any) -> Settings:
    return load_settings(**overrides)


def hs_settings(**overrides: Any) -> Settings:
    return settings(auth="jwt", jwt_secret=SECRET, **overrides)


def claims(sub: str = "alice", ttl: float = 60, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + ttl, **extra}


def refused(auth: Authenticator, token: str) -> str:
    with pytest.raises(AuthError) as info:
        auth.authenticate(token)
    message = info.value.message
    if len(token) >= 8:  # "dev:" itself is in the dev-mode hint
        assert token not in message and token[-20:] not in message, "a token leaked into an error message"
    return message


# ---------------------------------------------------------------- dev mode


def test_dev_token_names_the_user() -> None:
    assert Authenticator(settings()).authenticate("dev:alice") == Identity("alice", None)


@pytest.mark.parametrize("token", ["alice", "dev:", "dev:a:b", "dev:" + "a" * 65, "Dev:alice", "dev:al ice"])
def test_dev_mode_refuses_malformed_tokens(token: str) -> None:
    refused(Authenticator(settings()), token)


def test_dev_mode_logs_a_loud_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        Authenticator(settings())
    assert any(r.levelno == logging.WARNING and "CHATGW_AUTH=dev" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.example.com"])
def test_dev_mode_refuses_a_non_loopback_host(host: str) -> None:
    with pytest.raises(ConfigError, match="CHATGW_DEV_AUTH_ALLOW_NONLOCAL"):
        Authenticator(settings(host=host))
    Authenticator(settings(host=host, dev_auth_allow_nonlocal=True))  # explicit opt-in


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_jwt_mode_may_listen_anywhere() -> None:
    Authenticator(hs_settings(host="0.0.0.0"))


# ---------------------------------------------------------------- bearer header


@pytest.mark.parametrize(
    ("header", "token"),
    [(None, None), ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER x.y.z", "x.y.z")],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic abc", "abc"])
def test_bearer_token_refuses_other_schemes(header: str) -> None:
    with pytest.raises(AuthError):
        bearer_token(header)


# ---------------------------------------------------------------- HS256


def test_hs256_token_is_accepted() -> None:
    c = claims()
    identity = Authenticator(hs_settings()).authenticate(jwt.encode(c, SECRET, algorithm="HS256"))
    assert identity == Identity("alice", float(c["exp"]))


def test_dev_token_is_refused_in_jwt_mode() -> None:
    refused(Authenticator(hs_settings()), "dev:alice")


def test_forged_token_is_refused() -> None:
    token = jwt.encode(claims(), OTHER_SECRET, algorithm="HS256")
    assert "signature" in refused(Authenticator(hs_settings()), token)


def test_expired_token_is_refused() -> None:
    token = jwt.encode(claims(ttl=-1), SECRET, algorithm="HS256")
    assert refused(Authenticator(hs_settings()), token) == "token expired"


@pytest.mark.parametrize("missing", ["exp", "sub"])
def test_exp_and_sub_are_required(missing: str) -> None:
    c = claims()
    del c[missing]
    assert missing in refused(Authenticator(hs_settings()), jwt.encode(c, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("sub", ["a:b", "", "x" * 65, "auth0|123"])
def test_sub_must_be_a_safe_user_name(sub: str) -> None:
    token = jwt.encode(claims(sub=sub), SECRET, algorithm="HS256")
    refused(Authenticator(hs_settings()), token)


def test_non_string_sub_is_refused() -> None:
    token = jwt.encode({**claims(), "sub": 42}, SECRET, algorithm="HS256")
    refused(Authenticator(hs_settings()), token)


def test_audience_and_issuer_are_checked_when_configured() -> None:
    auth = Authenticator(hs_settings(jwt_audience="chatgw", jwt_issuer="https://idp.example"))
    good = claims(aud="chatgw", iss="https://idp.example")
    assert auth.authenticate(jwt.encode(good, SECRET, algorithm="HS256")).user == "alice"
    assert "audience" in refused(auth, jwt.encode({**good, "aud": "other"}, SECRET, algorithm="HS256"))
    assert "issuer" in refused(auth, jwt.encode({**good, "iss": "https://evil"}, SECRET, algorithm="HS256"))
    without_aud = {k: v for k, v in good.items() if k != "aud"}
    assert "aud" in refused(auth, jwt.encode(without_aud, SECRET, algorithm="HS256"))


def test_a_token_for_some_audience_is_refused_when_none_is_configured() -> None:
    # Strict on purpose: a token minted for another service is not ours to accept.
    refused(Authenticator(hs_settings()), jwt.encode(claims(aud="billing"), SECRET, algorithm="HS256"))


def test_alg_none_is_refused() -> None:
    token = jwt.encode(claims(), "", algorithm="none")
    assert "algorithm" in refused(Authenticator(hs_settings()), token)
    # Hand-made too, with an empty signature and a lower-case alg.
    head = jwt.utils.base64url_encode(b'{"alg":"None","typ":"JWT"}').decode()
    body = jwt.utils.base64url_encode(json.dumps(claims()).encode()).decode()
    refused(Authenticator(hs_settings()), f"{head}.{body}.")


def test_an_algorithm_not_configured_is_refused() -> None:
    token = jwt.encode(claims(), SECRET * 2, algorithm="HS512")
    assert "algorithm" in refused(Authenticator(hs_settings()), token)


@pytest.mark.parametrize("token", ["x", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30", "é" * 10])
def test_garbage_is_refused(token: str) -> None:
    refused(Authenticator(hs_settings()), token)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"jwt_secret": SECRET, "jwt_algorithms": ["none"]}, "unsupported"),
        ({"jwt_secret": SECRET, "jwt_algorithms": ["HS256", "foo"]}, "unsupported"),
        ({"jwt_secret": SECRET, "jwt_algorithms": []}, "empty"),
        ({"jwt_secret": "short"}, "at least 32 bytes"),
        ({"jwt_public_key_file": "/nonexistent.pem", "jwt_algorithms": ["RS256"]}, "PEM"),
        ({"jwt_jwks_file": "/nonexistent.json", "jwt_algorithms": ["RS256"]}, "JWKS"),
    ],
)
def test_bad_jwt_configuration_fails_at_start(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Authenticator(settings(auth="jwt", **overrides))


def test_hs_algorithm_needs_a_secret(tmp_path: Path) -> None:
    pem = write_pem(tmp_path, rsa_key())
    with pytest.raises(ConfigError, match="CHATGW_JWT_SECRET"):
        Authenticator(settings(auth="jwt", jwt_public_key_file=str(pem)))  # algorithms default: HS256


def test_asymmetric_algorithm_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="PUBLIC_KEY_FILE"):
        Authenticator(settings(auth="jwt", jwt_secret=SECRET, jwt_algorithms=["HS256", "RS256"]))


# ---------------------------------------------------------------- RS256 / ES256, PEM and JWKS


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_pem(
    tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, name: str = "pub.pem"
) -> Path:
    path = tmp_path / name
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def jwk_of(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, alg: str | None = None
) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = kid
    if alg:
        jwk["alg"] = alg
    return jwk


@pytest.mark.parametrize(("make", "alg"), [(rsa_key, "RS256"), (ec_key, "ES256")])
def test_pem_public_key(tmp_path: Path, make: Any, alg: str) -> None:
    key = make()
    auth = Authenticator(
        settings(auth="jwt", jwt_public_key_file=str(write_pem(tmp_path, key)), jwt_algorithms=[alg])
    )
    assert auth.authenticate(jwt.encode(claims(), key, algorithm=alg)).user == "alice"
    refused(auth, jwt.encode(claims(), make(), algorithm=alg))  # another key
    refused(auth, jwt.encode(claims(ttl=-5), key, algorithm=alg))


def test_algorithm_confusion_is_refused(tmp_path: Path) -> None:
    # Classic attack: sign HS256 with the (public) PEM as the HMAC secret.
    key = rsa_key()
    pem = write_pem(tmp_path, key)
    auth = Authenticator(
        settings(
            auth="jwt", jwt_secret=SECRET, jwt_public_key_file=str(pem), jwt_algorithms=["HS256", "RS256"]
        )
    )
    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    signature = hmac.new(pem.read_bytes(), header + b"." + payload, hashlib.sha256).digest()
    token = (header + b"." + payload + b"." + jwt.utils.base64url_encode(signature)).decode()
    refused(auth, token)
    assert auth.authenticate(jwt.encode(claims(), key, algorithm="RS256")).user == "alice"


def test_jwks_picks_the_key_by_kid(tmp_path: Path) -> None:
    k1, k2 = rsa_key(), ec_key()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk_of(k1, "one", "RS256"), jwk_of(k2, "two")]}))
    auth = Authenticator(settings(auth="jwt", jwt_jwks_file=str(path), jwt_algorithms=["RS256", "ES256"]))
    assert (
        auth.authenticate(jwt.encode(claims(sub="a"), k1, algorithm="RS256", headers={"kid": "one"})).user
        == "a"
    )
    assert (
        auth.authenticate(jwt.encode(claims(sub="b"), k2, algorithm="ES256", headers={"kid": "two"})).user
        == "b"
    )
    assert "key id" in refused(auth, jwt.encode(claims(), k1, algorithm="RS256", headers={"kid": "three"}))
    assert "key id" in refused(auth, jwt.encode(claims(), k1, algorithm="RS256"))  # no kid, two keys
    refused(auth, jwt.encode(claims(), k1, algorithm="RS256", headers={"kid": "two"}))  # wrong key for kid
    refused(auth, jwt.encode(claims(), k2, algorithm="ES256", headers={"kid": "one"}))  # alg ≠ key's alg


def test_jwks_with_one_key_needs_no_kid(tmp_path: Path) -> None:
    key = ec_key()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk_of(key, "only")]}))
    auth = Authenticator(settings(auth="jwt", jwt_jwks_file=str(path), jwt_algorithms=["ES256"]))
    assert auth.authenticate(jwt.encode(claims(), key, algorithm="ES256")).user == "alice"


def test_jwks_symmetric_keys_are_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    oct_key = {"kty": "oct", "kid": "s", "k": jwt.utils.base64url_encode(SECRET.encode()).decode()}
    path.write_text(json.dumps({"keys": [oct_key]}))
    with pytest.raises(ConfigError, match="no usable"):
        Authenticator(settings(auth="jwt", jwt_jwks_file=str(path), jwt_algorithms=["RS256"]))


# ---------------------------------------------------------------- Origin


def test_origin_policy() -> None:
    policy = OriginPolicy(["https://app.example.com/", "http://localhost:3000"])
    assert policy.allows(None)  # non-browser client
    assert policy.allows("https://app.example.com")
    assert policy.allows("HTTPS://APP.EXAMPLE.COM")
    assert policy.allows("http://localhost:3000")
    for origin in ["https://evil.example", "https://app.example.com.evil", "http://app.example.com",
                   "http://localhost:3001", "null", ""]:  # fmt: skip
        assert not policy.allows(origin), origin


def test_origin_policy_default_refuses_every_browser() -> None:
    policy = OriginPolicy([])
    assert policy.allows(None) and not policy.allows("http://127.0.0.1:8000")


def test_origin_wildcard_only_when_configured() -> None:
    assert OriginPolicy(["*"]).allows("https://anything.example")


# ---------------------------------------------------------------- chatgw token


def test_minted_token_is_accepted() -> None:
    s = hs_settings(jwt_audience="chatgw", jwt_issuer="me")
    identity = Authenticator(s).authenticate(mint(s, "bob", 120))
    assert identity.user == "bob" and identity.expires_at is not None
    assert 110 < identity.expires_at - time.time() <= 121


def test_mint_errors() -> None:
    with pytest.raises(ConfigError):
        mint(hs_settings(), "a:b")
    with pytest.raises(ConfigError):
        mint(hs_settings(), "bob", 0)
    with pytest.raises(ConfigError, match="HS256"):
        mint(hs_settings(jwt_algorithms=["HS512"]), "bob")


def test_token_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["token", "--user", "alice"]) == 0
    assert capsys.readouterr().out.strip() == "dev:alice"
    monkeypatch.setenv("CHATGW_AUTH", "jwt")
    monkeypatch.setenv("CHATGW_JWT_SECRET", SECRET)
    assert main(["token", "--user", "alice", "--ttl", "30"]) == 0
    token = capsys.readouterr().out.strip()
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert decoded["sub"] == "alice" and decoded["exp"] - decoded["iat"] == 30
    assert main(["token", "--user", "bad user"]) == 2
