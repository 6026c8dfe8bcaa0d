"""The :class:`~worker.agent.retrieval.Retriever` a worker uses: hybrid search over one index generation.

Each question is searched twice, in the dense FAISS index (the embedder's vectors) and with BM25 over
the same chunks (lexical.py), and the two rankings are merged by reciprocal rank fusion (fusion.py).
BM25 discounts words found everywhere and rewards rare ones; the dense side matches phrases and, with
a real embedding model, meaning.

The index is loaded once per worker process and reloaded when ``chatgw ingest`` publishes a new
generation: at most once per ``check_interval_s`` a query stats the manifest, and a changed one is
loaded off the event loop and swapped in whole (queries under way keep the snapshot they started with).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import faiss

from shared.errors import AgentError, ChatgwError, ErrorCode
from shared.protocol import Source
from worker.agent.embeddings import Embedder, HashingEmbedder
from worker.agent.fusion import reciprocal_rank_fusion
from worker.agent.index import MANIFEST, ChunkRow, IndexSnapshot, check_embedder

log = logging.getLogger(__name__)

_Stamp = tuple[int, int, int] | None  # (inode, mtime_ns, size) of the manifest; None: no index
CANDIDATES = 20  # each ranking's depth before fusion
# BM25 leads and the dense ranking breaks its near-ties: with the offline (hashing) embedder, BM25
# alone is the better ranking on the evaluation set, and equal weights lose 8 points of hit@1 to it,
# while this mix gains 1-2 points of hit@3 over it (docs/rag.md).
LEXICAL_WEIGHT = 1.0
TITLE_WEIGHT = 1.0  # a heading that contains the whole question ("What is chatgw?")
DENSE_WEIGHT = 0.2
FUSION_K = 5


class FaissRetriever:
    def __init__(self, root: Path, embedder: Embedder, *, check_interval_s: float = 1.0) -> None:
        """Loads the index now (at worker start), so a mismatched embedder fails the start: ConfigError."""
        self.root = root
        self.embedder = embedder
        self._lexical_embedder = isinstance(embedder, HashingEmbedder)
        self.check_interval_s = check_interval_s
        self.snapshot: IndexSnapshot | None = None
        self._stamp: _Stamp = None
        self._checked_at = time.monotonic()
        self._lock = asyncio.Lock()
        self._warned_missing = False
        # One query at a time is searched: OpenMP's thread hand-off costs more than it saves (measured
        # 1.7 ms vs 0.05 ms on the sample index, 65 vs 6 ms on 10k chunks, 2 cores). Concurrency comes
        # from concurrent runs instead: each search runs in its own thread and FAISS releases the GIL.
        faiss.omp_set_num_threads(1)
        self._load(self._stat())

    # ------------------------------------------------------------ queries

    async def retrieve(self, question: str, k: int) -> list[Source]:
        if k <= 0 or not question.strip():
            return []
        await self._maybe_reload()
        snapshot = self.snapshot
        if snapshot is None:
            return []
        # Embedding + search take ~0.1 ms on the sample corpus but grow with the index (a flat scan)
        # and a remote embedder blocks on the network: keep both off the event loop (docs/rag.md).
        return await asyncio.to_thread(self.search, snapshot, question, k)

    def search(self, snapshot: IndexSnapshot, question: str, k: int) -> list[Source]:
        vector = self.embedder.embed([question])[0]
        if vector.shape[0] != snapshot.manifest.dim:
            raise AgentError(
                f"the embedder returned {vector.shape[0]} dimensions; the index has {snapshot.manifest.dim}",
                code=ErrorCode.LLM_BAD_RESPONSE,
            )
        depth = max(k, CANDIDATES)
        matching = [row.id for row, _ in snapshot.search_text(question, snapshot.size)]
        dense = [row.id for row, _ in snapshot.search(vector, depth)]
        if self._lexical_embedder:
            # Hashed words: a dense hit sharing no word with the question is a hash collision.
            shared = set(matching)
            dense = [i for i in dense if i in shared]
        lexical = matching[:depth]
        titles = [row.id for row in snapshot.search_titles(question, depth)]
        fused = reciprocal_rank_fusion(
            [lexical, titles, dense], [LEXICAL_WEIGHT, TITLE_WEIGHT, DENSE_WEIGHT], k=FUSION_K
        )
        rows: list[ChunkRow] = [snapshot.rows[i] for i in fused[:k]]
        return [Source(id=row.source_id, title=row.title, snippet=row.text) for row in rows]

    async def generation(self) -> str:
        """The index generation queries are answered from, after picking up a newer one published on
        disk (a ``stat``; a reload only after an ingest). The answer cache keys answers by it, so
        answers given from an older generation stop matching once this worker moved on."""
        await self._maybe_reload(force=True)
        if self.snapshot is None:
            return "empty"
        manifest = self.snapshot.manifest
        return f"{manifest.version}:{manifest.updated_at!r}:{manifest.embedder}"

    # ------------------------------------------------------------ reloading

    def _stat(self) -> _Stamp:
        try:
            st = os.stat(self.root / MANIFEST)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, stamp: _Stamp) -> None:
        """Load the generation the manifest names; raise ConfigError if another embedder built it."""
        snapshot = IndexSnapshot.load(self.root) if stamp is not None else None
        if snapshot is not None:
            check_embedder(snapshot.manifest, self.root, self.embedder.identity, self.embedder.known_dim)
            log.info(
                "retrieval index v%d loaded from %s: %d chunks of %d files (%s, dim %d)",
                snapshot.manifest.version,
                self.root,
                snapshot.size,
                snapshot.manifest.file_count,
                snapshot.manifest.embedder,
                snapshot.manifest.dim,
            )
        elif not self._warned_missing:
            self._warned_missing = True
            log.warning(
                "no retrieval index at %s: answers get no sources until `chatgw ingest PATH...` builds one",
                self.root,
            )
        self.snapshot, self._stamp = snapshot, stamp

    async def _maybe_reload(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self.check_interval_s:
            return
        self._checked_at = now
        stamp = self._stat()
        if stamp == self._stamp or self._lock.locked():
            return  # unchanged, or another query is already loading it
        async with self._lock:
            try:
                await asyncio.to_thread(self._load, stamp)
            except (ChatgwError, OSError, RuntimeError) as exc:
                # Mid-run there is nobody to stop: keep answering from the generation we have.
                self._stamp = stamp  # and don't retry the same broken generation every second
                message = exc.message if isinstance(exc, ChatgwError) else str(exc)
                log.error("retrieval index at %s not reloaded: %s", self.root, message)
