"""Frame errors: each bad frame gets its error code, and the socket stays usable afterwards."""

from __future__ import annotations

import uuid
from typing import Any

from shared.testing.stack import Stack
from tests.integration.test_core_support import connect, start

MAX_CHARS = 20


async def test_bad_frames_get_errors_and_the_socket_stays_usable(bare_stack: Stack) -> None:
    start(bare_stack, CHATGW_MAX_CONTENT_CHARS=str(MAX_CHARS))
    run_id = uuid.uuid4().hex
    cases: list[tuple[str | bytes, str, str | None]] = [
        # (raw frame, expected code, expected echoed id)
        ('{"type": "ping", "id": "x"', "bad_json", None),
        ("not json at all", "bad_json", None),
        ("[1, 2]", "bad_frame", None),
        ('{"type": "teleport", "id": "u-1"}', "unknown_type", "u-1"),
        ('{"type": 5}', "unknown_type", None),
        ('{"id": "t-1"}', "bad_frame", "t-1"),
        ('{"type": "stop", "id": "m-1"}', "bad_frame", "m-1"),  # run_id missing
        ('{"type": "chat", "id": "m-2"}', "bad_frame", "m-2"),  # content missing
        ('{"type": "chat", "content": "", "id": "m-3"}', "bad_frame", "m-3"),
        ('{"type": "chat", "content": "hi", "colour": "red", "id": "m-4"}', "bad_frame", "m-4"),
        (f'{{"type": "resume", "run_id": "{run_id}", "after_seq": "3", "id": "m-5"}}', "bad_frame", "m-5"),
        (f'{{"type": "resume", "run_id": "{run_id}", "after_seq": -1}}', "bad_frame", None),
        ('{"type": "stop", "run_id": "../etc", "id": "m-6"}', "bad_frame", "m-6"),
        (
            '{"type": "chat", "content": "' + "x" * (MAX_CHARS + 1) + '", "id": "l-1"}',
            "content_too_long",
            "l-1",
        ),
        (b'{"type": "ping"}', "bad_frame", None),  # binary frame
    ]
    async with await connect(bare_stack) as conn:
        for raw, code, ref in cases:
            await conn.send_raw(raw)
            reply = await conn.reply(5)
            assert reply["type"] == "error" and reply["code"] == code, (raw, reply)
            assert reply.get("id") == ref, (raw, reply)
            assert isinstance(reply["message"], str) and reply["message"]
            assert not conn.closed.done()

        # The socket still works: ping, and a chat whose content is exactly at the limit.
        await conn.send({"type": "ping", "id": "p-1"})
        assert await conn.reply(5) == {"type": "pong", "id": "p-1"}
        accepted = await conn.chat("y" * MAX_CHARS, ref="ok")
        assert accepted["type"] == "run.accepted" and accepted["id"] == "ok"
        t = await conn.follow(accepted["run_id"], timeout=10)
        assert t.terminal is not None and t.terminal["type"] == "run.completed"
        assert not conn.closed.done()
        # No run was created by any refused frame: only the one accepted above has events.
        assert set(conn.runs) == {accepted["run_id"]}


async def test_bad_frame_message_names_the_field(stack: Stack) -> None:
    async with await connect(stack) as conn:
        frame: dict[str, Any] = {"type": "resume", "run_id": uuid.uuid4().hex, "after_seq": 1.5}
        await conn.send(frame)
        reply = await conn.reply(5)
        assert reply["code"] == "bad_frame" and "after_seq" in reply["message"]
