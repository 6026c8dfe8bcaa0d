"""BM25 over the chunks of one index generation (``bm25s``), the lexical half of hybrid retrieval.

The dense index (FAISS) finds chunks that share a question's words and phrases, but every shared word
counts about the same, so a word found in nearly every chunk ("chatgw") drowns the rare one that
matters ("ollama"). BM25 weighs each word by its inverse document frequency and saturates repeated
words, which is exactly that discount. ``worker/agent/fusion.py`` merges the two rankings.

Built in memory from the chunk rows when a generation is loaded (no file format, nothing downloaded):
about 0.1 s per 1,000 chunks. Words are stemmed as the offline embedder stems them; the chunk's
title is counted twice, as a section's topic is often only in its heading.

Identifiers stay whole and also give their parts: ``CHATGW_REDIS_URL`` is the token
``chatgw_redis_url`` plus ``redis`` and ``url``. The first part of an upper-case identifier is its
namespace (every setting starts with ``CHATGW_``): counting it would make every configuration chunk
look like an answer to "what is chatgw?".
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence

import bm25s
import numpy as np

from worker.agent.embeddings import STOPWORDS, stem

# bm25s sets its logger to DEBUG when imported ("Building index from tokens" on every load): undo that,
# so the application's logging configuration decides.
logging.getLogger("bm25s").setLevel(logging.NOTSET)

_WORD_RE = re.compile(r"[a-z0-9]+")
_TOKEN_RE = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")
TITLE_WEIGHT = 2


@functools.lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return stem(word)


def _expand(token: str) -> list[str]:
    if "_" not in token:
        return [_stem(token.lower())]
    parts = token.lower().split("_")
    if token.isupper():
        parts = parts[1:]  # CHATGW_REDIS_URL: the namespace is not what it is about
    return [token.lower(), *(_stem(p) for p in parts)]


def words(text: str) -> list[str]:
    """Every word, lowercased and stemmed (stopwords included: BM25's IDF discounts them)."""
    return [term for token in _TOKEN_RE.findall(text) for term in _expand(token)]


# A question of common words only ("what is this?", "what can it do?") asks for an introduction.
_OVERVIEW_WORDS = ("overview", "introduction")


def query_terms(question: str) -> list[str]:
    """The question's content words; when it has none, "overview" and "introduction"."""
    tokens = _TOKEN_RE.findall(question)
    content = [term for t in tokens if t.lower() not in STOPWORDS for term in _expand(t)]
    if content or not tokens:
        return content
    return [term for t in _OVERVIEW_WORDS for term in _expand(t)]


def phrase(text: str) -> str:
    """Lowercased words joined by single spaces: "What is chatgw?" → "what is chatgw"."""
    return " ".join(_WORD_RE.findall(text.lower()))


class TitleIndex:
    """Chunks whose title contains the whole question ("What is chatgw?" → the FAQ entry of that
    name): a question asked the way a heading puts it is best answered under that heading."""

    MIN_WORDS = 2

    def __init__(self, ids: Sequence[int], titles: Sequence[str]) -> None:
        # Shortest title first (the most specific heading), then document order.
        ordered = sorted(zip(ids, titles, strict=True), key=lambda pair: (len(pair[1]), pair[0]))
        self._titles = [(chunk_id, f" {phrase(title)} ") for chunk_id, title in ordered]

    def search(self, question: str, k: int) -> list[int]:
        wanted = phrase(question)
        if len(wanted.split()) < self.MIN_WORDS:
            return []
        return [chunk_id for chunk_id, title in self._titles if f" {wanted} " in title][:k]


class LexicalIndex:
    """BM25 (Lucene variant, k1=1.2, b=0.75) over each chunk's title (twice) and text."""

    def __init__(self, ids: Sequence[int], titles: Sequence[str], texts: Sequence[str]) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self._bm25: bm25s.BM25 | None = None
        if len(self.ids) == 0:
            return
        corpus = [
            words(" ".join([title] * TITLE_WEIGHT)) + words(text)
            for title, text in zip(titles, texts, strict=True)
        ]
        self._bm25 = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
        self._bm25.index(corpus, show_progress=False)

    def search(self, question: str, k: int) -> list[tuple[int, float]]:
        """Up to ``k`` (chunk id, score) pairs, best first; chunks sharing no word are left out."""
        if self._bm25 is None or k <= 0:
            return []
        known = [t for t in query_terms(question) if t in self._bm25.vocab_dict]
        if not known:
            return []
        scores = self._bm25.get_scores(known)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(self.ids[i]), float(scores[i])) for i in top if scores[i] > 0]
