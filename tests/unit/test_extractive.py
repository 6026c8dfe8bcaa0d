"""Offline answers a person can read: whole sentences of the sources, cited, deterministic, capped."""

from __future__ import annotations

import re

import pytest

from shared.protocol import Source
from worker.agent import OfflineChatModel, build_messages
from worker.agent.extractive import select_sentences, split_sentences
from worker.agent.offline import compose_answer

RESUME = Source(
    id="resume.md#0",
    title="Reconnecting and resuming a run",
    snippet=(
        "A run does not belong to a socket. Its events are stored in Redis, so a client that loses its "
        'connection reconnects and asks for the rest:\n\n```json\n{"type": "resume"}\n```\n\n'
        "The gateway replays the stored events with `seq` greater than `after_seq`, then switches to "
        "live events. There is no separate acknowledgement: the events themselves are the answer."
    ),
)
LIMITS = Source(
    id="limits.md#0",
    title="Limits and quotas",
    snippet=(
        "chatgw protects itself with per-user limits.\n\n| limit | setting (default) | what happens |\n"
        "|---|---|---|\n| chat messages per minute | `CHATGW_RATE_LIMIT_PER_MINUTE` (30) | `error` "
        "`rate_limited` |\n\n- The rate limit is a **token bucket** per user, refilled every minute.\n"
        "## Timeouts\n\nSee [the docs](https://example.com) for more about timeouts and limits."
    ),
)
STOP = Source(
    id="stop.md#1",
    title="Stopping a run",
    snippet="Send a stop frame to end a run early. The gateway answers with a run.state frame.",
)


def test_markdown_becomes_whole_sentences() -> None:
    sentences = split_sentences(LIMITS.snippet)
    assert sentences == [
        "chatgw protects itself with per-user limits.",
        "chat messages per minute: `CHATGW_RATE_LIMIT_PER_MINUTE` (30); `error` `rate_limited`.",
        "The rate limit is a token bucket per user, refilled every minute.",
        "See the docs for more about timeouts and limits.",
    ]
    resume = split_sentences(RESUME.snippet)
    assert "A run does not belong to a socket." in resume
    assert not any("{" in s for s in resume), "code blocks are not prose"
    assert resume[1].endswith("asks for the rest."), (
        "a sentence introducing a code block ends with a full stop"
    )


def test_the_answer_is_the_best_sentences_in_order_with_citations() -> None:
    answer = compose_answer("How does resume work after a dropped connection?", [RESUME, STOP])
    # The first sentence shares only its heading's words ("resuming"): right under it, that counts.
    assert answer.startswith("A run does not belong to a socket. Its events are stored in Redis")
    assert answer.endswith("[Reconnecting and resuming a run]")
    assert "stop frame" not in answer, "sentences sharing nothing with the question are left out"
    answer = compose_answer("is there a rate limit per user?", [LIMITS, RESUME])
    sentences = re.findall(r"[^.!?\]]+[.!?]", answer.split("[")[0])
    assert 2 <= len(sentences) <= 4
    assert answer.index("per-user limits") < answer.index("token bucket"), "in the order of the source"
    assert answer.count("[Limits and quotas]") == 1


def test_each_source_is_cited_after_its_sentences() -> None:
    answer = compose_answer("how do I stop a run and resume a run?", [RESUME, STOP])
    assert answer.index("[Reconnecting and resuming a run]") < answer.index("stop frame")
    assert answer.endswith("[Stopping a run]")


def test_no_doubled_punctuation() -> None:
    sources = [
        Source(id="a#0", title="A", snippet="Why would you add documents? Add them with chatgw ingest."),
        Source(id="b#0", title="B", snippet="Documents are read recursively:\n\n- .md files\n- .txt files"),
    ]
    earlier = ("How do I add documents?", False)
    answer = compose_answer("Where do the documents go?", sources, earlier)
    assert answer.startswith('Earlier you asked: "How do I add documents?" ')
    assert not re.search(r"[.!?:;,][.!?:;,]|\?\"\.", answer), answer


def test_nothing_matched_says_so_and_suggests_a_real_model() -> None:
    for sources in ([], [STOP]):
        answer = compose_answer("What is the weather in Paris?", sources)
        assert answer.startswith("No documents matched your question")
        assert "CHATGW_LLM=openai" in answer


@pytest.mark.parametrize("cap", [1, 5, 12, 30, 200])
async def test_the_answer_fits_the_token_cap_and_streams_word_by_word(cap: int) -> None:
    model = OfflineChatModel(token_delay_s=0, max_tokens=cap)
    messages = build_messages("How does resume work after a dropped connection?", [RESUME, LIMITS, STOP])
    tokens = [chunk.text async for chunk in model.astream(messages)]
    reply = await model.ainvoke(messages)
    assert "".join(tokens) == reply.text
    assert len(tokens) <= cap
    assert all(re.fullmatch(r"\S+\s*", t) for t in tokens), "words with their trailing whitespace"
    if cap >= 30:  # room for a whole sentence: it is never cut
        assert reply.response_metadata["finish_reason"] == "stop"
        assert reply.text.endswith("]")


def test_selection_is_deterministic_and_bounded() -> None:
    question = "limits rate minute user bucket docs timeouts"
    first = select_sentences(question, [LIMITS], max_words=200)
    assert first == select_sentences(question, [LIMITS], max_words=200)
    assert 2 <= len(first) <= 4
    assert sum(len(s.text.split()) for s in select_sentences(question, [LIMITS], max_words=20)) <= 20


async def test_the_model_sees_the_snippets_markdown_structure() -> None:
    # Through the system prompt, as the worker runs it: code blocks and tables are still recognised.
    model = OfflineChatModel(token_delay_s=0)
    reply = await model.ainvoke(build_messages("How does resume work after a dropped connection?", [RESUME]))
    assert "```" not in reply.text and '{"type"' not in reply.text
    assert reply.text == compose_answer("How does resume work after a dropped connection?", [RESUME])
    table = await model.ainvoke(build_messages("is there a rate limit per user?", [LIMITS]))
    assert "|" not in table.text and "per minute: `CHATGW_RATE_LIMIT_PER_MINUTE` (30)" in table.text
