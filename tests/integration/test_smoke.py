from __future__ import annotations

from client import ChatgwConnection
from shared.testing.stack import Stack


async def test_chat_streams_to_completion(stack: Stack) -> None:
    async with await ChatgwConnection.open(stack.gateways[0].url, "dev:alice") as conn:
        accepted = await conn.chat("What is chatgw?", ref="r1")
        assert accepted["type"] == "run.accepted" and accepted["id"] == "r1"
        transcript = await conn.follow(accepted["run_id"])
        assert transcript.seqs == list(range(1, len(transcript.events) + 1))
        assert transcript.events[0]["type"] == "run.started"
        assert transcript.terminal is not None and transcript.terminal["type"] == "run.completed"
        assert transcript.terminal["content"] == transcript.text


async def test_metrics_endpoint_counts_what_happened(stack: Stack) -> None:
    import urllib.request

    async with await ChatgwConnection.open(stack.gateways[0].url, "dev:alice") as conn:
        accepted = await conn.chat("count me")
        await conn.follow(accepted["run_id"])
        await conn.send_raw("not json")
        assert (await conn.reply())["code"] == "bad_json"
        with urllib.request.urlopen(f"{stack.gateways[0].http}/metrics", timeout=5) as response:
            text = response.read().decode()
    assert "chatgw_gateway_runs_started_total 1.0" in text
    assert 'chatgw_gateway_errors_total{code="bad_json"} 1.0' in text
    assert "chatgw_gateway_sockets 1.0" in text
