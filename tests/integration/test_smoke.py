from __future__ import annotations

from client import ChatgwConnection
from tests.integration.stack import Stack


async def test_chat_streams_to_completion(stack: Stack) -> None:
    async with await ChatgwConnection.open(stack.gateways[0].url, "dev:alice") as conn:
        accepted = await conn.chat("What is chatgw?", ref="r1")
        assert accepted["type"] == "run.accepted" and accepted["id"] == "r1"
        transcript = await conn.follow(accepted["run_id"])
        assert transcript.seqs == list(range(1, len(transcript.events) + 1))
        assert transcript.events[0]["type"] == "run.started"
        assert transcript.terminal is not None and transcript.terminal["type"] == "run.completed"
        assert transcript.terminal["content"] == transcript.text
