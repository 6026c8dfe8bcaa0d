"""The HTTP API (/v1) against a real gateway and worker: conversations, runs, errors, expiry, and the
chat frame's own on_busy."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from client import ChatgwConnection, RunTranscript
from shared.testing.stack import Stack


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker and one gateway for the module (answers last about half a second)."""
    stack = Stack(redis_url, tmp_path_factory.mktemp("api"), CHATGW_OFFLINE_TOKEN_DELAY_MS="10")
    stack.start_both()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def short_lived(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Conversations expire after 2 s unused; chats enqueue by default and may choose only interrupt."""
    stack = Stack(
        redis_url,
        tmp_path_factory.mktemp("short-lived"),
        CHATGW_CONVERSATION_TTL_S="2",
        CHATGW_CONVERSATION_SWEEP_S="0.2",
        CHATGW_ON_BUSY="enqueue",
        CHATGW_ON_BUSY_ALLOWED="interrupt",
    )
    stack.start_both()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def user() -> str:
    """A user of the test's own (the per-user rate limit counts every test's chats otherwise)."""
    return f"u{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def conn(api: Stack, user: str) -> AsyncIterator[ChatgwConnection]:
    async with await ChatgwConnection.open(api.gateways[0].url, f"dev:{user}") as connection:
        yield connection


def http(stack: Stack, user: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer dev:{user}"} if user else {}
    return httpx.AsyncClient(base_url=stack.gateways[0].http, headers=headers, timeout=30)


async def turn(conn: ChatgwConnection, content: str, conversation_id: str | None = None) -> RunTranscript:
    accepted = await conn.chat(content, conversation_id)
    assert accepted["type"] == "run.accepted", accepted
    return await conn.follow(accepted["run_id"])


def memory_rows(stack: Stack, conversation_id: str) -> int:
    """Checkpoint rows the conversation has in the stack's SQLite store."""
    with sqlite3.connect(stack.log_dir / "checkpoints.sqlite") as conn:
        return int(
            sum(
                conn.execute(
                    f"SELECT count(*) FROM {table} WHERE thread_id = ?", (conversation_id,)
                ).fetchone()[0]
                for table in ("checkpoints", "writes")
            )
        )


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code and body["message"], body


# ---------------------------------------------------------------- conversations


async def test_conversations_are_listed_read_and_deleted(
    api: Stack, user: str, conn: ChatgwConnection, redis: Redis
) -> None:
    first = await turn(conn, "  How does resume   work?\n")
    conversation_id = first.events[0]["conversation_id"]
    second = await turn(conn, "And stop?", conversation_id)
    other = await turn(conn, "Something else")

    async with http(api, user) as client:
        listed = (await client.get("/v1/conversations")).json()
        ids = [c["id"] for c in listed["conversations"]]
        assert ids == [other.events[0]["conversation_id"], conversation_id], "newest activity first"
        summary = listed["conversations"][1]
        assert summary["title"] == "How does resume work?" and summary["active_run"] is None
        assert summary["created_at"] <= summary["last_activity"]

        detail = (await client.get(f"/v1/conversations/{conversation_id}")).json()
        assert {k: detail[k] for k in summary} == summary
        assert len(detail["turns"]) == 2
        for shown, run, question in zip(
            detail["turns"], (first, second), ("  How does resume   work?\n", "And stop?"), strict=True
        ):
            assert shown["run_id"] == run.run_id and shown["question"] == question
            assert shown["answer"] == run.terminal["content"] and shown["stopped"] is False  # type: ignore[index]
            assert shown["sources"] == run.events[1]["sources"]
            assert shown["asked_at"] <= shown["answered_at"]

        state = (await client.get(f"/v1/runs/{second.run_id}")).json()
        assert state == {
            "run_id": second.run_id,
            "status": "completed",
            "last_seq": second.last_seq,
            "conversation_id": conversation_id,
            "created_at": state["created_at"],
            "ended_at": state["ended_at"],
            "attempt": 1,
        }
        assert state["created_at"] <= state["ended_at"]
        assert abs(state["ended_at"] - second.terminal["ts"]) < 1  # type: ignore[index]

        assert memory_rows(api, conversation_id) > 0
        deleted = await client.delete(f"/v1/conversations/{conversation_id}")
        assert deleted.status_code == 204 and deleted.content == b""
        assert_error(await client.get(f"/v1/conversations/{conversation_id}"), 404, "conversation_not_found")
        assert_error(
            await client.delete(f"/v1/conversations/{conversation_id}"), 404, "conversation_not_found"
        )
        assert_error(await client.get(f"/v1/runs/{first.run_id}"), 404, "run_not_found")
        after = (await client.get("/v1/conversations")).json()
        assert conversation_id not in [c["id"] for c in after["conversations"]]

    assert memory_rows(api, conversation_id) == 0, "its memory is gone"
    leftovers = [
        key async for key in redis.scan_iter(f"{api.prefix}:*", count=10_000) if conversation_id in key
    ]
    leftovers += [key async for key in redis.scan_iter(f"{api.prefix}:run:{first.run_id}*", count=10_000)]
    assert leftovers == [], "its metadata and run logs are gone"
    refused = await conn.chat("Still there?", conversation_id)
    assert refused["type"] == "error" and refused["code"] == "conversation_not_found"


async def test_pages_follow_the_cursor_newest_first(api: Stack) -> None:
    async with await ChatgwConnection.open(api.gateways[0].url, "dev:paula") as paula:
        accepted = [await paula.chat(f"question {i}") for i in range(5)]
        await asyncio.gather(*(paula.follow(a["run_id"]) for a in accepted))
    newest_first = [a["conversation_id"] for a in reversed(accepted)]

    async with http(api, "paula") as client:
        seen: list[list[str]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/conversations", params=params)).json()
            seen.append([c["id"] for c in page["conversations"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [newest_first[:2], newest_first[2:4], newest_first[4:]]
        whole = (await client.get("/v1/conversations", params={"limit": 100})).json()
        assert [c["id"] for c in whole["conversations"]] == newest_first and whole["next_cursor"] is None
        titles = [c["title"] for c in whole["conversations"]]
        assert titles == [f"question {i}" for i in reversed(range(5))]


async def test_another_users_ids_answer_exactly_like_missing_ones(
    api: Stack, user: str, conn: ChatgwConnection
) -> None:
    mine = await turn(conn, "Mine alone")
    conversation_id = mine.events[0]["conversation_id"]
    unknown = uuid.uuid4().hex
    async with http(api, "mallory") as mallory, http(api, user) as owner:
        for kind, real, code in (
            ("conversations", conversation_id, "conversation_not_found"),
            ("runs", mine.run_id, "run_not_found"),
        ):
            theirs, missing = (
                await mallory.get(f"/v1/{kind}/{real}"),
                await mallory.get(f"/v1/{kind}/{unknown}"),
            )
            assert_error(theirs, 404, code)
            assert_error(missing, 404, code)
            assert theirs.json()["message"] == missing.json()["message"].replace(unknown, real)
        assert_error(
            await mallory.delete(f"/v1/conversations/{conversation_id}"), 404, "conversation_not_found"
        )
        assert conversation_id not in [
            c["id"] for c in (await mallory.get("/v1/conversations")).json()["conversations"]
        ]
        assert (await owner.get(f"/v1/conversations/{conversation_id}")).status_code == 200, "untouched"


@pytest.mark.parametrize(
    ("method", "path", "params", "auth", "status", "code"),
    [
        ("GET", "/v1/conversations", {}, None, 401, "unauthorized"),
        ("GET", "/v1/conversations", {}, "Bearer dev:not a user!", 401, "unauthorized"),
        ("GET", "/v1/conversations", {}, "Basic YWxpY2U6eA==", 401, "unauthorized"),
        ("GET", "/v1/runs/abc", {}, None, 401, "unauthorized"),
        ("GET", "/v1/conversations", {"limit": 0}, "Bearer dev:alice", 400, "bad_request"),
        ("GET", "/v1/conversations", {"limit": 101}, "Bearer dev:alice", 400, "bad_request"),
        ("GET", "/v1/conversations", {"limit": "ten"}, "Bearer dev:alice", 400, "bad_request"),
        ("GET", "/v1/conversations", {"cursor": "zzz"}, "Bearer dev:alice", 400, "bad_request"),
        ("GET", "/v1/conversations", {"cursor": "A" * 300}, "Bearer dev:alice", 400, "bad_request"),
        ("GET", "/v1/conversations/bad!id", {}, "Bearer dev:alice", 400, "bad_request"),
        ("DELETE", "/v1/conversations/" + "a" * 65, {}, "Bearer dev:alice", 400, "bad_request"),
        ("GET", "/v1/runs/" + "r" * 65, {}, "Bearer dev:alice", 400, "bad_request"),
        ("GET", "/v1/nothing-here", {}, "Bearer dev:alice", 404, "not_found"),
        ("POST", "/v1/conversations", {}, "Bearer dev:alice", 405, "method_not_allowed"),
    ],
)
async def test_bad_requests_get_a_4xx_with_a_code(
    api: Stack, method: str, path: str, params: dict[str, Any], auth: str | None, status: int, code: str
) -> None:
    async with http(api, None) as client:
        headers = {"Authorization": auth} if auth else {}
        response = await client.request(method, path, params=params, headers=headers)
    assert_error(response, status, code)
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


async def test_deleting_stops_the_run_in_flight_first(api: Stack, user: str, conn: ChatgwConnection) -> None:
    accepted = await conn.chat("Tell me everything, slowly")
    conversation_id = accepted["conversation_id"]
    started = await conn.follow(accepted["run_id"], until_seq=3)  # it is streaming
    async with http(api, user) as client:
        listed = (await client.get(f"/v1/conversations/{conversation_id}")).json()
        assert listed["active_run"] == accepted["run_id"]
        running = (await client.get(f"/v1/runs/{accepted['run_id']}")).json()
        assert running["status"] == "running" and running["ended_at"] is None and running["last_seq"] >= 3
        deleted = await client.delete(f"/v1/conversations/{conversation_id}")
        assert deleted.status_code == 204, deleted.text
        ended = await conn.follow(accepted["run_id"], started)
        assert ended.terminal is not None and ended.terminal["type"] == "run.stopped"
        assert_error(await client.get(f"/v1/runs/{accepted['run_id']}"), 404, "run_not_found")
    # The stopped turn was recorded before the run ended, and deleted after.
    assert memory_rows(api, conversation_id) == 0


async def test_the_api_is_documented_in_openapi(api: Stack) -> None:
    async with http(api, None) as client:
        schema = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    operations = {(path, method) for path, ops in schema["paths"].items() for method in ops}
    assert {
        ("/v1/conversations", "get"),
        ("/v1/conversations/{conversation_id}", "get"),
        ("/v1/conversations/{conversation_id}", "delete"),
        ("/v1/runs/{run_id}", "get"),
    } <= operations
    listing = schema["paths"]["/v1/conversations"]["get"]
    assert {"400", "401", "503"} <= set(listing["responses"]) and "422" not in listing["responses"]
    assert (
        "ErrorBody" in schema["components"]["schemas"]
        and "HTTPBearer" in schema["components"]["securitySchemes"]
    )
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# ---------------------------------------------------------------- on_busy per request


async def test_a_chat_may_choose_to_enqueue(conn: ChatgwConnection) -> None:
    first = await conn.chat("first question")
    second = await conn.chat("second question", first["conversation_id"], on_busy="enqueue")
    assert second["type"] == "run.accepted" and second["queued"] is True
    one, two = await conn.follow(first["run_id"]), await conn.follow(second["run_id"])
    assert one.terminal is not None and one.terminal["type"] == "run.completed"
    assert two.terminal is not None and two.terminal["type"] == "run.completed"
    assert two.events[0]["ts"] >= one.terminal["ts"], "the queued run started after the first ended"


async def test_a_chat_may_choose_to_interrupt(conn: ChatgwConnection) -> None:
    first = await conn.chat("first question")
    second = await conn.chat("actually, this", first["conversation_id"], on_busy="interrupt")
    assert second["type"] == "run.accepted" and not second.get("queued", False)
    one, two = await conn.follow(first["run_id"]), await conn.follow(second["run_id"])
    assert one.terminal is not None and one.terminal["type"] == "run.stopped"
    assert two.terminal is not None and two.terminal["type"] == "run.completed"


async def test_a_chat_may_say_reject_and_the_default_still_applies_without_a_choice(
    conn: ChatgwConnection,
) -> None:
    first = await conn.chat("first question")
    busy = await conn.chat("second", first["conversation_id"], on_busy="reject")
    assert busy["type"] == "error" and busy["code"] == "conversation_busy"
    default = await conn.chat("third", first["conversation_id"])  # CHATGW_ON_BUSY=reject
    assert default["type"] == "error" and default["code"] == "conversation_busy"
    await conn.follow(first["run_id"])


async def test_a_choice_the_server_does_not_allow_is_refused(short_lived: Stack) -> None:
    async with await ChatgwConnection.open(short_lived.gateways[0].url, "dev:olga") as conn:
        first = await conn.chat("first question")
        conversation_id = first["conversation_id"]
        refused = await conn.chat("second", conversation_id, ref="c-2", on_busy="reject")
        assert refused == {
            "type": "error",
            "id": "c-2",
            "code": "on_busy_not_allowed",
            "message": refused["message"],
        }
        assert "enqueue, interrupt" in refused["message"]
        queued = await conn.chat("third", conversation_id)  # no choice: the server's enqueue
        assert queued["type"] == "run.accepted" and queued["queued"] is True
        await conn.follow(first["run_id"])
        await conn.follow(queued["run_id"])
    async with http(short_lived, "olga") as client:
        turns = (await client.get(f"/v1/conversations/{conversation_id}")).json()["turns"]
    assert [t["question"] for t in turns] == ["first question", "third"], "the refused chat started nothing"


# ---------------------------------------------------------------- expiry


async def test_an_unused_conversation_expires_with_its_memory(short_lived: Stack) -> None:
    async with await ChatgwConnection.open(short_lived.gateways[0].url, "dev:erin") as conn:
        done = await turn(conn, "Will you remember this?")
    conversation_id = done.events[0]["conversation_id"]
    assert memory_rows(short_lived, conversation_id) > 0
    async with http(short_lived, "erin") as client:
        assert (await client.get(f"/v1/conversations/{conversation_id}")).status_code == 200
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while memory_rows(short_lived, conversation_id) > 0:
            assert loop.time() < deadline, "the conversation did not expire"
            await asyncio.sleep(0.1)
        assert_error(await client.get(f"/v1/conversations/{conversation_id}"), 404, "conversation_not_found")
        assert (await client.get("/v1/conversations")).json() == {"conversations": [], "next_cursor": None}
    # Its runs' logs are not the conversation's memory: they go CHATGW_RUN_RETENTION_S after each run.
