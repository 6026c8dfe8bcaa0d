"""The WebSocket layer of a live gateway: Origin check (403 before any socket exists), frame size
(1009, memory flat), no permessage-deflate, idle sockets closed (4004), dead peers dropped by the
keep-alive ping, and dev auth refusing a non-loopback address."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from shared.errors import CloseCode
from shared.protocol import parse_server_frame
from shared.testing.stack import Gateway, Stack, wait_for

APP_ORIGIN = "https://app.example.com"
AUTH = {"Authorization": "Bearer dev:alice"}


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        redis_url,
        Path(tmp_path_factory.mktemp("transport")),
        CHATGW_ALLOWED_ORIGINS=json.dumps([APP_ORIGIN, "http://localhost:3000"]),
        CHATGW_WS_PING_INTERVAL_S="0.5",
        CHATGW_WS_PING_TIMEOUT_S="0.5",
        CHATGW_MAX_SOCKETS_PER_USER="1000",
    )
    s.start_gateway()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> Gateway:
    return stack.gateways[0]


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    parse_server_frame(raw)
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def close_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        return ws.close_code


async def ping_pong(ws: ClientConnection) -> None:
    await ws.send('{"type":"ping"}')
    assert (await recv(ws))["type"] == "pong"


# ---------------------------------------------------------------- Origin (cross-site WebSocket hijacking)


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.com.evil.example", "null"])
async def test_foreign_origin_gets_403_before_the_upgrade(gateway: Gateway, origin: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(gateway.url, origin=origin, additional_headers=AUTH):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403


@pytest.mark.parametrize("origin", [APP_ORIGIN, "http://localhost:3000", None])
async def test_allowed_or_absent_origin_gets_in(gateway: Gateway, origin: str | None) -> None:
    async with connect(gateway.url, origin=origin, additional_headers=AUTH) as ws:  # type: ignore[arg-type]
        await ping_pong(ws)


# ---------------------------------------------------------------- frame size and compression


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def send_oversized(url: str, size: int) -> int | None:
    async with connect(url, additional_headers=AUTH, max_size=None) as ws:
        with contextlib.suppress(ConnectionClosed):
            await ws.send("x" * size)
        return await close_code(ws)


async def test_frame_over_the_limit_closes_1009_and_memory_stays_flat(gateway: Gateway) -> None:
    big = 65 * 1024  # CHATGW_MAX_FRAME_BYTES defaults to 64 KiB
    for _ in range(10):  # warm up allocator and connection paths
        assert await send_oversized(gateway.url, big) == CloseCode.MESSAGE_TOO_BIG
    before = rss_kib(gateway.pid)
    for _ in range(10):
        codes = await asyncio.gather(*(send_oversized(gateway.url, big) for _ in range(20)))
        assert set(codes) == {CloseCode.MESSAGE_TOO_BIG}
    after = rss_kib(gateway.pid)
    # 200 frames x 65 KiB = 13 MiB if they were buffered and kept; allow a little noise.
    assert after - before < 4 * 1024, f"RSS grew by {after - before} KiB"


async def test_frame_just_under_the_limit_is_answered(gateway: Gateway) -> None:
    async with connect(gateway.url, additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "chat", "content": "x" * 65_000}))
        assert (await recv(ws))["code"] == "content_too_long"
        await ping_pong(ws)


async def test_permessage_deflate_is_not_negotiated(gateway: Gateway) -> None:
    async with connect(gateway.url, additional_headers=AUTH, compression="deflate") as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in (ws.request.headers.get("Sec-WebSocket-Extensions") or "")
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        await ping_pong(ws)


async def test_invalid_utf8_text_frame_closes_1007(gateway: Gateway) -> None:
    async with connect(gateway.url, additional_headers=AUTH) as ws:
        await ws.send(b'{"type":"ping","id":"\xff"}', text=True)
        assert await close_code(ws) == CloseCode.INVALID_DATA


# ---------------------------------------------------------------- keep-alive and idle sockets


def test_a_peer_that_never_answers_pings_is_dropped(gateway: Gateway) -> None:
    # A raw TCP client: it upgrades, then neither reads nor answers the gateway's pings.
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Authorization: Bearer dev:alice\r\n\r\n"
            ).encode()
        )
        start = time.monotonic()
        received = b""
        while chunk := sock.recv(4096):  # until the gateway closes the TCP connection
            received += chunk
        elapsed = time.monotonic() - start
    assert received.startswith(b"HTTP/1.1 101")
    assert b"\x89" in received  # it did ping us (opcode 0x9, FIN set)
    assert elapsed < 5.0  # ping interval 0.5 s + timeout 0.5 s, plus slack


async def test_idle_socket_is_closed_with_4004(bare_stack: Stack) -> None:
    gateway = bare_stack.start_gateway(CHATGW_IDLE_TIMEOUT_S="1")
    async with (
        connect(gateway.url, additional_headers=AUTH) as idle,
        connect(gateway.url, additional_headers=AUTH) as busy,
    ):
        start = time.monotonic()
        while time.monotonic() - start < 2.5:  # the busy one keeps talking, the idle one does not
            await ping_pong(busy)
            await asyncio.sleep(0.3)
        assert await close_code(idle, timeout=1) == CloseCode.IDLE_TIMEOUT
        await ping_pong(busy)


# ---------------------------------------------------------------- dev auth is for local use


def test_dev_auth_refuses_a_non_loopback_host(bare_stack: Stack) -> None:
    gateway = bare_stack.start_gateway(wait=False, CHATGW_HOST="0.0.0.0")
    wait_for(lambda: not gateway.alive(), timeout=30, what="gateway refusing to start")
    assert gateway.popen.returncode == 2
    assert "CHATGW_DEV_AUTH_ALLOW_NONLOCAL" in gateway.output()


def test_dev_auth_warns_at_start(gateway: Gateway) -> None:
    assert "WARNING gateway.auth" in gateway.output() and "CHATGW_AUTH=dev" in gateway.output()
