"""The gateway's HTTP guards (gateway/http_guard.py): unfinished upgrade requests are closed after
CHATGW_HANDSHAKE_TIMEOUT_S, and beyond CHATGW_MAX_CONNECTIONS a connection gets HTTP 503 at once.
Raw TCP clients on 127.0.0.1, a bounded number of them."""

from __future__ import annotations

import asyncio
import resource

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from client import ChatgwConnection
from shared.testing.invariants import assert_run_invariants
from shared.testing.stack import Gateway, Stack

SLOW = 1000
HANDSHAKE_TIMEOUT_S = 2.0
UNFINISHED_UPGRADE = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


@pytest.fixture(autouse=True)
def room_for_sockets() -> None:
    """The test and the gateway (which inherits the limit) each hold ~SLOW descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SLOW * 2 + 512
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def hold_unfinished(gateway: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(UNFINISHED_UPGRADE)
    await writer.drain()
    return reader, writer, asyncio.get_running_loop().time()


async def closed_after(reader: asyncio.StreamReader, opened_at: float, limit_s: float) -> float:
    """Seconds from opening until the gateway closed the connection (it never answers)."""
    try:
        data = await asyncio.wait_for(reader.read(), limit_s)
        assert data == b"", data[:100]
    except ConnectionResetError:
        pass
    return asyncio.get_running_loop().time() - opened_at


async def test_unfinished_upgrades_are_closed_in_time_while_a_user_chats(bare_stack: Stack) -> None:
    gateway = bare_stack.start_gateway(CHATGW_HANDSHAKE_TIMEOUT_S=str(HANDSHAKE_TIMEOUT_S))
    bare_stack.start_worker()
    slow = [await hold_unfinished(gateway) for _ in range(SLOW)]
    closing = [
        asyncio.create_task(closed_after(reader, opened_at, HANDSHAKE_TIMEOUT_S + 10))
        for reader, _, opened_at in slow
    ]
    try:
        async with await ChatgwConnection.open(gateway.url, "dev:alice") as conn:
            accepted = await conn.chat("hello from behind a slowloris")
            transcript = await conn.follow(accepted["run_id"], timeout=60)
        assert_run_invariants(transcript.events)
        assert transcript.terminal is not None and transcript.terminal["type"] == "run.completed"
        lifetimes = await asyncio.gather(*closing)
    finally:
        for _, writer, _ in slow:
            writer.close()
    assert min(lifetimes) >= HANDSHAKE_TIMEOUT_S - 0.1, "closed before its deadline"
    assert max(lifetimes) < HANDSHAKE_TIMEOUT_S + 5.0, f"slowest close after {max(lifetimes):.1f} s"
    assert gateway.alive()


async def test_beyond_the_connection_cap_new_connections_get_503_at_once(bare_stack: Stack) -> None:
    cap = 20
    gateway = bare_stack.start_gateway(CHATGW_MAX_CONNECTIONS=str(cap))
    held = [await asyncio.open_connection("127.0.0.1", gateway.port) for _ in range(cap)]
    try:
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 2.0)  # the 503, then the close
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:100]
        with pytest.raises(InvalidStatus) as refused:
            await connect(gateway.url, additional_headers={"Authorization": "Bearer dev:alice"})
        assert refused.value.response.status_code == 503
        for _, writer in held[:3]:
            writer.close()
        # Room again: a WebSocket gets in and is served.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            try:
                conn = await ChatgwConnection.open(gateway.url, "dev:alice")
                break
            except InvalidStatus:
                assert loop.time() < deadline, "no room after closing held connections"
                await asyncio.sleep(0.05)
        async with conn:
            await conn.send({"type": "ping", "id": "p"})
            assert await conn.reply() == {"type": "pong", "id": "p"}
    finally:
        for _, writer in held:
            writer.close()
    assert "connection limit (20) reached" in gateway.output()
