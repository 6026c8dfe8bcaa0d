"""CHATGW_AUTH=jwt against a live gateway: good tokens get in (header or auth frame), forged,
expired, wrong-audience, wrong-issuer and unsigned ones are refused with 4001, an expiring token
closes its socket with 4003, and no token ever reaches the gateway's log."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared.errors import CloseCode
from shared.protocol import parse_server_frame
from shared.testing.stack import Gateway, Stack

SECRET = "integration-secret-integration-secret"
AUDIENCE = "chatgw"
ISSUER = "https://idp.test"
USED_TOKENS: list[str] = []


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    stack = Stack(
        redis_url,
        Path(tmp_path_factory.mktemp("jwt")),
        CHATGW_AUTH="jwt",
        CHATGW_JWT_SECRET=SECRET,
        CHATGW_JWT_AUDIENCE=AUDIENCE,
        CHATGW_JWT_ISSUER=ISSUER,
        CHATGW_AUTH_TIMEOUT_S="3",
    )
    try:
        yield stack.start_gateway()
    finally:
        stack.stop()


def token(sub: str = "alice", ttl: float = 300, key: str = SECRET, alg: str = "HS256", **over: Any) -> str:
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl, "aud": AUDIENCE, "iss": ISSUER, **over}
    claims = {k: v for k, v in claims.items() if v is not None}
    made = jwt.encode(claims, key if alg != "none" else "", algorithm=alg)
    USED_TOKENS.append(made)
    return made


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    parse_server_frame(raw)  # well-formed
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def until_closed(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, list[dict[str, Any]]]:
    frames = []
    try:
        while True:
            frames.append(await recv(ws, timeout))
    except ConnectionClosed:
        pass
    assert ws.close_code is not None
    return ws.close_code, frames


async def ping_pong(ws: ClientConnection) -> None:
    await ws.send('{"type":"ping","id":"p"}')
    assert await recv(ws) == {"type": "pong", "id": "p"}


async def test_valid_token_in_header(gateway: Gateway) -> None:
    async with connect(gateway.url, additional_headers={"Authorization": f"Bearer {token()}"}) as ws:
        await ping_pong(ws)


async def test_valid_token_in_auth_frame(gateway: Gateway) -> None:
    async with connect(gateway.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token(sub="bob")}))
        await ping_pong(ws)


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "forged": lambda: token(key="not-the-secret-not-the-secret-not-the"),
    "expired": lambda: token(ttl=-10),
    "wrong_audience": lambda: token(aud="billing"),
    "no_audience": lambda: token(aud=None),
    "wrong_issuer": lambda: token(iss="https://evil.test"),
    "alg_none": lambda: token(alg="none"),
    "no_exp": lambda: token(exp=None),
    "bad_sub": lambda: token(sub="a:b"),
    "dev_token": lambda: "dev:alice",
    "garbage": lambda: "x" * 300,
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
@pytest.mark.parametrize("via", ["header", "frame"])
async def test_bad_tokens_are_refused_with_4001(gateway: Gateway, kind: str, via: str) -> None:
    bad = BAD_TOKENS[kind]()
    headers = {"Authorization": f"Bearer {bad}"} if via == "header" else None
    async with connect(gateway.url, additional_headers=headers) as ws:
        if via == "frame":
            await ws.send(json.dumps({"type": "auth", "token": bad}))
        code, frames = await until_closed(ws)
    assert code == CloseCode.UNAUTHORIZED
    assert [f["code"] for f in frames] == ["unauthorized"]
    assert bad not in frames[0]["message"]


async def test_token_expiry_closes_the_socket_with_4003(gateway: Gateway) -> None:
    short = token(ttl=2)
    async with connect(gateway.url, additional_headers={"Authorization": f"Bearer {short}"}) as ws:
        opened = time.monotonic()
        await ping_pong(ws)  # usable until it expires
        code, _ = await until_closed(ws, timeout=6)
        elapsed = time.monotonic() - opened
    assert code == CloseCode.TOKEN_EXPIRED
    assert 0.5 < elapsed < 4.0


async def test_token_expiry_applies_to_auth_frame_logins(gateway: Gateway) -> None:
    async with connect(gateway.url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token(ttl=1)}))
        await ping_pong(ws)
        code, _ = await until_closed(ws, timeout=5)
    assert code == CloseCode.TOKEN_EXPIRED


async def test_no_auth_frame_closes_with_4002(gateway: Gateway) -> None:
    async with connect(gateway.url) as ws:
        code, frames = await until_closed(ws, timeout=6)
    assert code == CloseCode.AUTH_TIMEOUT and frames == []


def test_tokens_never_reach_the_log(gateway: Gateway) -> None:
    # Runs last in this module (file order): every token above has been presented by now.
    log = gateway.output()
    assert USED_TOKENS
    for used in USED_TOKENS:
        assert used not in log
        signature = used.rsplit(".", 1)[-1]
        assert not signature or signature not in log  # not even the signature
    assert "Traceback" not in log
