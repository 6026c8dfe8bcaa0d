"""Which browser origins may open /ws: dev mode allows local development servers, JWT mode stays strict."""

from __future__ import annotations

import pytest

from gateway.origin import OriginPolicy
from shared.settings import load_settings


def policy(*, serves_page: bool = False, **settings: object) -> OriginPolicy:
    return OriginPolicy.for_settings(load_settings(_env_file=None, **settings), serves_page=serves_page)


JWT = {"auth": "jwt", "jwt_secret": "x" * 32}


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:5173",
        "http://localhost:3000",
        "http://LOCALHOST:8080/",
        "http://localhost",
        "http://127.0.0.1:5173",
        "http://[::1]:5173",
        "http://127.0.0.1:8000",  # the gateway's own origin
    ],
)
def test_dev_mode_allows_local_development_origins(origin: str) -> None:
    assert policy().allows(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://localhost.evil.example:5173",
        "http://127.0.0.1.nip.io:5173",
        "https://localhost:5173",  # a local dev server speaks http; https://localhost is something else
        "null",
        "file://",
        "http://192.168.1.20:5173",
    ],
)
def test_dev_mode_refuses_everything_else(origin: str) -> None:
    assert not policy().allows(origin)


def test_requests_without_origin_are_allowed_in_every_mode() -> None:
    assert policy().allows(None) and policy(**JWT).allows(None)


def test_jwt_mode_is_strict_by_default() -> None:
    strict = policy(**JWT)
    for origin in ("http://localhost:5173", "http://127.0.0.1:8000", "https://app.example.com"):
        assert not strict.allows(origin, "127.0.0.1:8000")
    listed = policy(**JWT, allowed_origins=["https://app.example.com"])
    assert listed.allows("https://app.example.com") and not listed.allows("http://localhost:5173")


def test_jwt_mode_trusts_its_own_origin_when_it_serves_its_own_page() -> None:
    own = policy(serves_page=True, **JWT)
    assert own.allows("http://127.0.0.1:8000")
    assert not own.allows("http://127.0.0.1:8001") and not own.allows("http://localhost:5173")


def test_on_a_wildcard_address_the_own_origin_is_the_host_the_browser_used() -> None:
    own = policy(serves_page=True, host="0.0.0.0", port=8000, **JWT)
    assert own.allows("https://chat.example.com", "chat.example.com")
    assert own.allows("http://chat.example.com:8000", "chat.example.com:8000")
    assert not own.allows("https://evil.example", "chat.example.com")
    assert not own.allows("https://chat.example.com", None)


def test_an_explicit_list_and_star_still_work() -> None:
    assert policy(allowed_origins=["https://app.example.com"]).allows("https://APP.example.com/")
    assert policy(**JWT, allowed_origins=["*"]).allows("https://anything.example")


def test_the_start_line_and_the_refusal_name_the_setting() -> None:
    assert "http://localhost:*" in policy().describe() and "dev auth" in policy().describe()
    assert "CHATGW_ALLOWED_ORIGINS" in policy(**JWT).describe()
    hint = OriginPolicy.refusal_hint("https://app.example.com")
    assert "CHATGW_ALLOWED_ORIGINS=https://app.example.com" in hint
