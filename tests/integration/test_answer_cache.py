"""The answer cache with a real worker, gateway and Redis (docs/tiers.md): a repeated first-turn
question streams the same answer again, resumable, marked cached and not billed; a second turn, a
stopped answer and a re-ingested corpus never get a cached answer."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from cli.ingest import ingest
from client import ChatgwConnection, RunTranscript
from shared.settings import load_settings
from shared.testing.stack import Stack
from tests.integration.test_core_support import assert_well_formed, close_quietly, connect, replay, start

QUESTION = "What is the alpha release?"
NO_MATCH = "Tell me something about zebras and quantum knitting"  # the offline model's long "no match"


def ingest_docs(stack: Stack, **files: str) -> None:
    docs = stack.log_dir / "docs"
    docs.mkdir(exist_ok=True)
    for name, text in files.items():
        (docs / f"{name}.md").write_text(text)
    settings = load_settings(data_dir=stack.log_dir, index_path=stack.log_dir / "index")
    assert ingest([docs], settings).written


async def usage_today(stack: Stack, user: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{stack.gateways[0].http}/v1/usage", headers={"Authorization": f"Bearer dev:{user}"}
    )

    def get() -> dict[str, Any]:
        with urllib.request.urlopen(request, timeout=5) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    return await asyncio.to_thread(get)


async def ask(conn: ChatgwConnection, content: str, conversation_id: str | None = None) -> RunTranscript:
    accepted = await conn.chat(content, conversation_id)
    transcript = await conn.follow(accepted["run_id"], timeout=20)
    assert_well_formed(transcript)
    return transcript


async def test_a_repeated_first_question_is_answered_from_the_cache(bare_stack: Stack) -> None:
    ingest_docs(
        bare_stack,
        alpha="# Alpha release\n\nThe alpha release is the first public build. It is for testers.\n",
    )
    start(bare_stack, CHATGW_CACHE="on", CHATGW_OFFLINE_TOKEN_DELAY_MS="20")
    conn = await connect(bare_stack, "alice")
    try:
        first = await ask(conn, QUESTION)
        done = first.terminal
        assert done is not None and done["type"] == "run.completed" and "cached" not in done
        assert "alpha release" in done["content"].lower()
        spent = (await usage_today(bare_stack, "alice"))["tokens_today"]
        assert spent == done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"]

        # Same question, other words' case and spacing, new conversation: the same answer, cached.
        again = await ask(conn, "  what is the ALPHA release ")
        hit = again.terminal
        assert hit is not None and hit["type"] == "run.completed" and hit["cached"] is True
        assert hit["content"] == done["content"] == again.text
        assert hit["usage"] == {**done["usage"], "billed": False}
        assert [e["type"] for e in again.events][:3] == ["run.started", "retrieval", "token"]
        assert again.events[1]["sources"] == first.events[1]["sources"]
        assert (await usage_today(bare_stack, "alice"))["tokens_today"] == spent  # not billed
        # Resumable like any run: the log replays the same events.
        assert (await replay(conn, again.run_id, 0)).events == again.events

        # The second turn of a conversation has earlier turns: the model answers it.
        follow_up = await ask(conn, QUESTION, conversation_id=done["conversation_id"])
        assert follow_up.terminal is not None and "cached" not in follow_up.terminal

        # A stopped answer is never cached.
        accepted = await conn.chat(NO_MATCH)
        partial = await conn.follow(accepted["run_id"], until_seq=5, timeout=10)
        await conn.stop(accepted["run_id"])
        stopped = (await conn.follow(accepted["run_id"], partial, timeout=10)).terminal
        assert stopped is not None and stopped["type"] == "run.stopped"
        whole = (await ask(conn, NO_MATCH)).terminal
        assert whole is not None and "cached" not in whole and len(whole["content"]) > len(stopped["content"])
        assert (await ask(conn, NO_MATCH)).terminal["cached"] is True  # type: ignore[index]

        # Re-ingesting the corpus changes its version: the old entry no longer matches.
        ingest_docs(bare_stack, beta="# Beta release\n\nThe beta release follows the alpha release.\n")
        after = (await ask(conn, QUESTION)).terminal
        assert after is not None and "cached" not in after
        assert (await ask(conn, QUESTION)).terminal["cached"] is True  # type: ignore[index]
    finally:
        await close_quietly(conn)
