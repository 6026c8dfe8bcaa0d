"""The answer cache: a repeated first-turn question gets the answer given before, without the model.

**Eligible** runs opened their conversation (no earlier turns, so memory cannot change the answer);
``CHATGW_CACHE=off`` turns the cache off. The **key** is the normalised question (:func:`normalise`)
plus its *context*: the retrieval corpus version (:func:`corpus_version`: the index generation the
worker answers from, which every ingest that changes the index moves on), the model, the system
prompt and the generation settings. An entry (content, sources, usage) lives ``CHATGW_CACHE_TTL_S``
in ``Keys.answer`` and is **stored** only from a completed answer that was neither truncated nor
itself cached; stopped and failed runs never are.

A **hit** is streamed like any answer — ``retrieval``, then ``token`` events (the emitter coalesces
them, so at full speed), then ``run.completed`` — so it is resumable and stoppable as usual; its
``run.completed`` says ``cached: true`` and carries the original usage with ``billed: false``.

**Semantic matching** (``CHATGW_CACHE_SIMILARITY``, off by default): an exact miss embeds the question
with the retrieval embedder and reuses the answer of the most similar cached question of the same
context, if its cosine is at least that. Each worker mirrors the context's question vectors from
Redis (``Keys.answer_questions``/``answer_vectors``, at most :data:`MAX_SIMILAR_QUESTIONS`),
reading only entries newer than its last look.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.keys import Keys
from shared.protocol import Source
from shared.runstore import Claim
from shared.settings import Settings
from worker.agent.embeddings import Embedder, Vectors, build_embedder
from worker.agent.faiss_retriever import FaissRetriever
from worker.agent.graph import AgentGraph, AgentResult
from worker.agent.memory import record_partial_turn, turn_info
from worker.agent.retrieval import Retriever
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

FORMAT = 1  # bump when an entry's shape or the key material changes: old entries stop matching
MAX_SIMILAR_QUESTIONS = 2000  # per context, for semantic matching (the oldest go first)
REPLAY_YIELD_EVERY = 32  # pieces between yields to the loop while replaying (a stop can land)
MIRROR_OVERLAP_S = 10.0  # re-read this much of the index each refresh: stores that landed late

_SPACES = re.compile(r"\s+")
_TRAILING = re.compile("[\\s?.!\u3002\uff1f\uff01]+$")  # also CJK full stop, question and exclamation marks
_PIECE_START = re.compile(r"(?<=\s)(?=\S)")

# KEYS: entry, questions (sorted set), vectors (hash). ARGV: entry JSON, ttl_s, now, digest,
# vector ('' = no semantic matching), horizon (older questions are dropped), max_questions.
STORE_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[5] == '' then return 1 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[6])
local extra = redis.call('ZCARD', KEYS[2]) - #gone - tonumber(ARGV[7])
if extra > 0 then
  for _, digest in ipairs(redis.call('ZRANGE', KEYS[2], #gone, #gone + extra - 1)) do
    gone[#gone + 1] = digest
  end
end
for _, digest in ipairs(gone) do
  redis.call('ZREM', KEYS[2], digest)
  redis.call('HDEL', KEYS[3], digest)
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 1
"""


def normalise(question: str) -> str:
    """What makes two questions the same: Unicode-normalised, case-folded, spaces collapsed,
    trailing punctuation dropped ("What is chatgw?" == "  what IS chatgw ")."""
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", question).casefold()).strip()
    return _TRAILING.sub("", text)


def pieces(content: str) -> list[str]:
    """The answer cut before each word: the token texts of its replay, joining back to ``content``."""
    return [piece for piece in _PIECE_START.split(content) if piece]


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]


CorpusVersion = Callable[[], Awaitable[str]]


def corpus_version(retriever: Retriever) -> CorpusVersion:
    """What the key records of the corpus: the index generation the worker's retriever answers from
    (:meth:`FaissRetriever.generation`, which moves on with every ingest that changes the index);
    "none" when answers retrieve nothing."""
    if isinstance(retriever, FaissRetriever):
        return retriever.generation

    async def no_corpus() -> str:
        return "none"

    return no_corpus


def context_of(settings: Settings, corpus: str) -> str:
    """Everything besides the question that shapes a first-turn answer."""
    material = {
        "format": FORMAT,
        "corpus": corpus,
        "model": [settings.llm, settings.llm_model, settings.llm_base_url],
        "system_prompt": settings.system_prompt,
        "generation": [
            settings.llm_temperature,
            settings.llm_max_tokens,
            settings.offline_max_tokens,
            settings.retrieval_k,
        ],
    }
    return _digest(json.dumps(material, sort_keys=True))[:32]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    content: str
    sources: list[dict[str, str]]
    usage: dict[str, int] | None

    def encode(self) -> str:
        return json.dumps({"content": self.content, "sources": self.sources, "usage": self.usage})

    @classmethod
    def decode(cls, raw: str) -> CachedAnswer | None:
        try:
            data = json.loads(raw)
            return cls(str(data["content"]), list(data["sources"]), data.get("usage"))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class _Mirror:
    """One context's cached question vectors, as this worker last read them from Redis."""

    digests: list[str] = field(default_factory=list)
    created: list[float] = field(default_factory=list)
    vectors: Vectors = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    read_until: float = 0.0


@dataclass
class CacheTicket:
    """One run's use of the cache: the answer it replays (``hit``), or what it may store."""

    cache: AnswerCache | None  # None: the run is not eligible
    question: str = ""
    digest: str = ""
    context: str = ""
    hit: CachedAnswer | None = None
    vector: Vectors | None = None  # the question's embedding, when semantic matching computed it
    sources: list[Source] = field(default_factory=list)  # what the model's run retrieved

    async def replay(
        self,
        on_sources: Callable[[list[Source]], Awaitable[None]],
        on_token: Callable[[str], Awaitable[None]],
    ) -> AgentResult:
        """Stand-in for the agent: the cached sources, then the answer's pieces, as fast as they go."""
        assert self.hit is not None
        await on_sources([Source.model_validate(s) for s in self.hit.sources])
        for n, piece in enumerate(pieces(self.hit.content), 1):
            await on_token(piece)
            if n % REPLAY_YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let the appends go out, and a stop cancel us
        return AgentResult(content=self.hit.content, usage=self.hit.usage)

    def terminal(self, event: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        """A replayed run.completed says so, and its usage (the original run's) was not billed again."""
        kind, fields = event
        if self.hit is None or kind != "run.completed":
            return event
        fields = {**fields, "cached": True}
        if isinstance(fields.get("usage"), dict):
            fields["usage"] = {**fields["usage"], "billed": False}
        return kind, fields

    async def remember(self, graph: AgentGraph, config: Any, budget_chars: int) -> None:
        """The graph did not run: keep the turn in the conversation's memory as it would have."""
        assert self.hit is not None
        turn_info(config).sources = list(self.hit.sources)
        await record_partial_turn(
            graph, config, self.question, self.hit.content, stopped=False, budget_chars=budget_chars
        )

    async def store(self, event: tuple[str, dict[str, Any]]) -> None:
        """Keep a completed, untruncated answer of the model for the next asker."""
        kind, fields = event
        if self.cache is None or self.hit is not None or kind != "run.completed" or fields.get("truncated"):
            return
        answer = CachedAnswer(
            content=str(fields.get("content", "")),
            sources=[s.model_dump() for s in self.sources],
            usage=fields.get("usage"),
        )
        await self.cache.put(self, answer)


class AnswerCache:
    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        keys: Keys,
        metrics: WorkerMetrics,
        *,
        corpus: CorpusVersion,
        embedder: Embedder | None = None,
    ) -> None:
        self.enabled = settings.cache == "on"
        self._settings = settings
        self._redis = redis
        self._keys = keys
        self._metrics = metrics
        self._ttl_s = settings.cache_ttl_s
        self._similarity = settings.cache_similarity
        self._corpus = corpus
        # The retrieval embedder, for semantic matching only (built here: a bad setting fails the boot).
        self._embedder = embedder or (build_embedder(settings) if self._similarity is not None else None)
        self._mirrors: dict[str, _Mirror] = {}
        self._store = redis.register_script(STORE_SCRIPT)

    async def open(self, claim: Claim, max_tokens: int) -> CacheTicket:
        """The run's ticket: a hit to replay, or a miss it may fill. Never raises: a cache it cannot
        read is a miss (the model answers)."""
        if not (self.enabled and claim.first_turn):
            return CacheTicket(None)
        try:
            context = context_of(self._settings, await self._corpus())
        except Exception:
            log.warning("answer cache: the corpus version is unknown; asking the model", exc_info=True)
            return CacheTicket(None)
        ticket = CacheTicket(self, claim.content, _digest(context, normalise(claim.content)), context)
        result = "miss"
        try:
            ticket.hit = await self._get(ticket.digest)
            if ticket.hit is not None:
                result = "hit"
            elif self._similarity is not None:
                ticket.hit = await self._similar(ticket)
                result = "similar" if ticket.hit is not None else "miss"
        except (RedisError, OSError) as exc:
            log.warning("answer cache unavailable (%s); asking the model", exc)
        except Exception:  # the embedder of semantic matching (a remote one may fail)
            log.warning("answer cache lookup failed; asking the model", exc_info=True)
        if ticket.hit is not None and len(pieces(ticket.hit.content)) >= max_tokens:
            ticket.hit, result = None, "miss"  # longer than this user's tier may get in one run
        self._metrics.answer_cache.labels(result).inc()
        return ticket

    async def put(self, ticket: CacheTicket, answer: CachedAnswer) -> None:
        """Never raises: an answer that could not be cached is only asked again."""
        try:
            vector = ""
            if self._similarity is not None:
                if ticket.vector is None:
                    ticket.vector = await self._embed(ticket.question)
                vector = base64.b64encode(ticket.vector.astype(np.float32).tobytes()).decode()
            now = time.time()
            similar = self._similar_context(ticket.context)
            await self._store(
                keys=[
                    self._keys.answer(ticket.digest),
                    self._keys.answer_questions(similar),
                    self._keys.answer_vectors(similar),
                ],
                args=[
                    answer.encode(),
                    self._ttl_s,
                    repr(now),
                    ticket.digest,
                    vector,
                    repr(now - self._ttl_s),
                    MAX_SIMILAR_QUESTIONS,
                ],
            )
        except Exception:
            log.warning("could not cache an answer", exc_info=True)

    async def _get(self, digest: str) -> CachedAnswer | None:
        raw = await self._redis.get(self._keys.answer(digest))
        return None if raw is None else CachedAnswer.decode(str(raw))

    # -- semantic matching

    def _similar_context(self, context: str) -> str:
        # Vectors of two embedders do not compare: the embedder is part of the index's name.
        identity = self._embedder.identity if self._embedder is not None else ""
        return _digest(context, identity)[:32]

    async def _embed(self, question: str) -> Vectors:
        embedder = self._embedder
        assert embedder is not None
        vector: Vectors = (await asyncio.to_thread(embedder.embed, [question]))[0]
        return vector

    async def _similar(self, ticket: CacheTicket) -> CachedAnswer | None:
        assert self._similarity is not None
        ticket.vector = await self._embed(ticket.question)
        mirror = await self._refresh(self._similar_context(ticket.context))
        if not mirror.digests or mirror.vectors.shape[1] != ticket.vector.shape[0]:
            return None
        scores = mirror.vectors @ ticket.vector
        best = int(np.argmax(scores))
        if float(scores[best]) < self._similarity:
            return None
        return await self._get(mirror.digests[best])

    async def _refresh(self, context: str) -> _Mirror:
        """Bring this worker's copy of a context's question vectors up to date (new entries only)."""
        mirror = self._mirrors.get(context)
        if mirror is None:
            self._mirrors = {context: (mirror := _Mirror())}  # contexts change with the corpus: keep one
        now = time.time()
        since = max(mirror.read_until - MIRROR_OVERLAP_S, now - self._ttl_s)
        found = await self._redis.zrangebyscore(
            self._keys.answer_questions(context), since, "+inf", withscores=True
        )
        known = set(mirror.digests)
        pairs = cast(list[tuple[str, float]], found)
        fresh = [(str(d), float(at)) for d, at in pairs if str(d) not in known]
        rows: list[Vectors] = []
        if fresh:
            encoded = await self._redis.hmget(self._keys.answer_vectors(context), [d for d, _ in fresh])
            for (digest, at), raw in zip(fresh, encoded, strict=True):
                if raw is None:
                    continue
                rows.append(np.frombuffer(base64.b64decode(raw), dtype=np.float32))
                mirror.digests.append(digest)
                mirror.created.append(at)
        if rows:
            stacked = np.vstack(rows)
            mirror.vectors = stacked if mirror.vectors.size == 0 else np.vstack([mirror.vectors, stacked])
        keep = [i for i, at in enumerate(mirror.created) if at >= now - self._ttl_s]
        if len(keep) < len(mirror.created):
            mirror.digests = [mirror.digests[i] for i in keep]
            mirror.created = [mirror.created[i] for i in keep]
            mirror.vectors = mirror.vectors[keep]
        mirror.read_until = now
        return mirror
