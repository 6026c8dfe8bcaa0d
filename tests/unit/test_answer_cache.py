"""worker.answer_cache: what makes two questions the same, what the key depends on, and the cache
itself against a real Redis (exact and semantic hits, what is never stored, the hit/miss counter)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from cli.ingest import ingest
from shared.keys import Keys
from shared.protocol import Source
from shared.runstore import Claim
from shared.settings import Settings, load_settings
from worker.answer_cache import (
    AnswerCache,
    CachedAnswer,
    CacheTicket,
    context_of,
    corpus_version,
    normalise,
    pieces,
)
from worker.metrics import WorkerMetrics
from worker.runtime import build_retriever


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("CHATGW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def keys(redis: Redis) -> AsyncIterator[Keys]:
    keys = Keys(f"tc{uuid.uuid4().hex[:10]}")
    yield keys
    stale = [key async for key in redis.scan_iter(f"{keys.prefix}:*", count=1000)]
    if stale:
        await redis.delete(*stale)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=tmp_path, **overrides)


async def no_corpus() -> str:
    return "none"


def claim(content: str, *, first_turn: bool = True) -> Claim:
    return Claim(uuid.uuid4().hex, 1, "alice", uuid.uuid4().hex, content, tier="free", first_turn=first_turn)


COMPLETED = (
    "run.completed",
    {"content": "chatgw is a gateway. [Overview]", "usage": {"prompt_tokens": 9, "completion_tokens": 5}},
)


def test_questions_match_whatever_their_case_spacing_and_final_punctuation() -> None:
    assert normalise("  What IS   chatgw? ") == normalise("what is chatgw") == "what is chatgw"
    assert normalise("What is chatgw\uff1f") == "what is chatgw"  # full-width question mark
    assert normalise("What is chatgw?") != normalise("What is a chatgw?")
    assert normalise("ﬁle") == "file"  # NFKC


@pytest.mark.parametrize("content", ["a b  c\n", "  leading", "one", "", "tab\tsep and\n\nnewlines "])
def test_replay_pieces_join_back_to_the_answer(content: str) -> None:
    assert "".join(pieces(content)) == content
    assert all(piece for piece in pieces(content))


def test_the_context_changes_with_model_prompt_settings_and_corpus(tmp_path: Path) -> None:
    base = settings(tmp_path)
    same = context_of(base, "1:0.5:hash")
    assert context_of(settings(tmp_path), "1:0.5:hash") == same
    assert context_of(base, "2:0.7:hash") != same
    assert context_of(settings(tmp_path, system_prompt="Be terse."), "1:0.5:hash") != same
    assert context_of(settings(tmp_path, offline_max_tokens=50), "1:0.5:hash") != same
    assert context_of(settings(tmp_path, llm_temperature=0.9), "1:0.5:hash") != same
    assert context_of(settings(tmp_path, retrieval_k=5), "1:0.5:hash") != same


async def test_the_corpus_version_moves_with_every_ingest_that_changes_the_index(tmp_path: Path) -> None:
    s = settings(tmp_path)
    corpus = corpus_version(build_retriever(s))
    assert await corpus() == "empty"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Alpha\n\nAlpha is the first letter.\n")
    ingest([docs], s)
    first = await corpus()  # at once: no waiting for the retriever's periodic reload
    assert first != "empty"
    ingest([docs], s)  # unchanged: nothing published, same version
    assert await corpus() == first
    (docs / "b.md").write_text("# Beta\n\nBeta is the second letter.\n")
    ingest([docs], s)
    assert await corpus() not in (first, "empty")
    assert await corpus_version(build_retriever(settings(tmp_path, retrieval_k=0)))() == "none"


def test_a_replayed_completion_says_cached_and_not_billed() -> None:
    ticket = CacheTicket(None, hit=CachedAnswer("x", [], {"prompt_tokens": 9, "completion_tokens": 5}))
    _, fields = ticket.terminal(
        ("run.completed", {"content": "x", "usage": {"prompt_tokens": 9, "completion_tokens": 5}})
    )
    assert fields["cached"] is True
    assert fields["usage"] == {"prompt_tokens": 9, "completion_tokens": 5, "billed": False}
    stopped = ("run.stopped", {"content": "x"})
    assert ticket.terminal(stopped) == stopped
    assert CacheTicket(None).terminal(COMPLETED) == COMPLETED


def counts(metrics: WorkerMetrics) -> dict[str, float]:
    found: dict[str, float] = {}
    for metric in metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "chatgw_worker_answer_cache_total":
                found[sample.labels["result"]] = sample.value
    return found


async def store(
    cache: AnswerCache, question: str, event: tuple[str, dict[str, Any]] = COMPLETED
) -> CacheTicket:
    ticket = await cache.open(claim(question), max_tokens=2000)
    ticket.sources = [Source(id="overview.md#0", title="Overview", snippet="chatgw is a gateway.")]
    await ticket.store(event)
    return ticket


async def test_a_completed_answer_is_found_by_the_same_question(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    metrics = WorkerMetrics()
    cache = AnswerCache(settings(tmp_path), redis, keys, metrics, corpus=no_corpus)
    first = await store(cache, "What is chatgw?")
    assert first.hit is None
    again = await cache.open(claim("what is chatgw"), max_tokens=2000)
    assert again.hit is not None and again.digest == first.digest
    assert again.hit.content == COMPLETED[1]["content"]
    assert again.hit.usage == {"prompt_tokens": 9, "completion_tokens": 5}
    assert again.hit.sources == [
        {"id": "overview.md#0", "title": "Overview", "snippet": "chatgw is a gateway."}
    ]
    assert counts(metrics) == {"miss": 1.0, "hit": 1.0}
    tokens: list[str] = []
    shown: list[list[Source]] = []

    async def on_sources(sources: list[Source]) -> None:
        shown.append(sources)

    async def on_token(text: str) -> None:
        tokens.append(text)

    result = await again.replay(on_sources, on_token)
    assert "".join(tokens) == result.content == COMPLETED[1]["content"] and len(tokens) > 1
    assert shown[0][0].title == "Overview"


async def test_what_is_never_stored_or_looked_up(redis: Redis, keys: Keys, tmp_path: Path) -> None:
    metrics = WorkerMetrics()
    cache = AnswerCache(settings(tmp_path), redis, keys, metrics, corpus=no_corpus)
    await store(cache, "truncated?", ("run.completed", {"content": "a b", "truncated": True}))
    await store(cache, "stopped?", ("run.stopped", {"content": "a b"}))
    await store(cache, "failed?", ("run.failed", {"error": {"code": "agent_error", "message": "m"}}))
    for question in ("truncated?", "stopped?", "failed?"):
        assert (await cache.open(claim(question), max_tokens=2000)).hit is None
    await store(cache, "What is chatgw?")
    second_turn = await cache.open(claim("What is chatgw?", first_turn=False), max_tokens=2000)
    assert second_turn.cache is None and second_turn.hit is None
    # An answer longer than this tier may get in one run is asked again (and counted a miss).
    assert (await cache.open(claim("What is chatgw?"), max_tokens=3)).hit is None
    off = AnswerCache(settings(tmp_path, cache="off"), redis, keys, metrics, corpus=no_corpus)
    assert (await off.open(claim("What is chatgw?"), max_tokens=2000)).cache is None
    assert counts(metrics) == {"miss": 8.0}


async def test_the_cache_never_crosses_key_prefixes(redis: Redis, keys: Keys, tmp_path: Path) -> None:
    cache = AnswerCache(settings(tmp_path), redis, keys, WorkerMetrics(), corpus=no_corpus)
    await store(cache, "What is chatgw?")
    other = Keys(f"{keys.prefix}x")
    try:
        elsewhere = AnswerCache(settings(tmp_path), redis, other, WorkerMetrics(), corpus=no_corpus)
        assert (await elsewhere.open(claim("What is chatgw?"), max_tokens=2000)).hit is None
    finally:
        stale = [key async for key in redis.scan_iter(f"{other.prefix}:*")]
        if stale:
            await redis.delete(*stale)


async def test_semantic_matching_reuses_a_similar_question_only(
    redis: Redis, keys: Keys, tmp_path: Path
) -> None:
    metrics = WorkerMetrics()
    similar = settings(tmp_path, cache_similarity=0.8)
    writer = AnswerCache(similar, redis, keys, metrics, corpus=no_corpus)
    await store(writer, "How does resume work after a dropped connection?")
    reader = AnswerCache(
        similar, redis, keys, metrics, corpus=no_corpus
    )  # another worker: mirrors the vectors from Redis
    near = await reader.open(
        claim("how does resume work after a dropped connection, please"), max_tokens=2000
    )
    assert near.hit is not None and near.hit.content == COMPLETED[1]["content"]
    far = await reader.open(claim("Which embedder does retrieval use?"), max_tokens=2000)
    assert far.hit is None
    assert counts(metrics) == {"miss": 2.0, "similar": 1.0}
    exact_only = AnswerCache(settings(tmp_path), redis, keys, WorkerMetrics(), corpus=no_corpus)
    assert (
        await exact_only.open(claim("how does resume work after a dropped connection, please"), 2000)
    ).hit is None
