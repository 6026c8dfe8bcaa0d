"""Text → unit vectors, for the FAISS index. Two embedders behind one small protocol:

- :class:`HashingEmbedder` (default): feature hashing of stemmed words and word pairs. No model, no
  network, deterministic across processes and machines (blake2b, never Python's salted ``hash()``).
- :class:`OpenAIEmbedder`: any OpenAI-compatible ``/v1/embeddings`` endpoint.

Both return float32 rows of L2 norm 1, so FAISS inner product is cosine similarity.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from shared.errors import AgentError, ConfigError, ErrorCode
from shared.settings import Settings

Vectors = NDArray[np.float32]


class Embedder(Protocol):
    @property
    def identity(self) -> str:
        """What built the vectors (recorded in the index; a different identity cannot query it)."""
        ...

    @property
    def known_dim(self) -> int | None:
        """Length of the vectors if known without a call (a remote model's is learnt on first use)."""
        ...

    def dimension(self) -> int:
        """Length of the vectors (may cost one call to learn it)."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised float32 row per text. Synchronous: callers keep it off the event loop."""
        ...


def normalize(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0  # an empty text stays the zero vector instead of becoming NaN
    out: Vectors = (vectors / norms).astype(np.float32, copy=False)
    return out


# ---------------------------------------------------------------- offline hashing embedder

_WORD_RE = re.compile(r"[a-z0-9]+")
# Function words and question words: they match everything, so they only add noise to a query.
_STOPWORDS = """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either else etc few for
    from further get gets got had has have having he her here hers him his how i if in into is it its
    itself just let me might more most must my no nor not now of off on once only or other our ours
    out over own same shall she should so some such than that the their theirs them then there these
    they this those through to too under until up us very via want was we were what when where which
    while who whom why will with would yes yet you your yours"""
STOPWORDS = frozenset(_STOPWORDS.split())
# Longest first; each suffix needs a stem of at least 3 letters left.
_SUFFIXES = (
    "ations",
    "ation",
    "ments",
    "ment",
    "ings",
    "ing",
    "ions",
    "ion",
    "ies",
    "ied",
    "ed",
    "es",
    "s",
)


def stem(word: str) -> str:
    """A light suffix stripper: stop/stops/stopped/stopping → stop, resume/resumed/resuming → resum.

    Not linguistically exact; it only has to map inflections of one word to the same key, the same way
    for documents and questions.
    """
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                break  # class, status, redis: not plurals
            word = word[: -len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeioulsz":
        word = word[:-1]  # stopp → stop, runn → run
    return word


def terms(text: str) -> list[str]:
    """Lowercased, stemmed content words, in order."""
    return [stem(w) for w in _WORD_RE.findall(text.lower()) if w not in STOPWORDS]


def features(text: str) -> Counter[str]:
    """Words and adjacent word pairs (pairs reward phrases such as "run timeout" or "key prefix")."""
    words = terms(text)
    counts: Counter[str] = Counter(words)
    counts.update(f"{a} {b}" for a, b in itertools.pairwise(words))
    return counts


class HashingEmbedder:
    """Sublinear tf (1 + ln tf) of hashed features, signed to cancel collisions out, L2-normalised."""

    VERSION = 1  # bump when features() or the hashing changes: old indexes then need --rebuild

    def __init__(self, dim: int = 1024) -> None:
        if dim < 16:
            raise ConfigError(f"CHATGW_EMBEDDINGS_DIM must be at least 16, not {dim}")
        self.dim = dim
        self._slots: dict[str, tuple[int, float]] = {}

    @property
    def identity(self) -> str:
        return f"hashing-v{self.VERSION}"

    @property
    def known_dim(self) -> int:
        return self.dim

    def dimension(self) -> int:
        return self.dim

    def _slot(self, feature: str) -> tuple[int, float]:
        slot = self._slots.get(feature)
        if slot is None:
            digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
            slot = (digest % self.dim, 1.0 if digest >> 63 else -1.0)
            if len(self._slots) < 500_000:  # bounded memo: hashing dominates the cost otherwise
                self._slots[feature] = slot
        return slot

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, count in features(text).items():
                index, sign = self._slot(feature)
                out[row, index] += sign * (1.0 + math.log(count))
        return normalize(out)


# ---------------------------------------------------------------- OpenAI-compatible endpoint


class OpenAIEmbedder:
    """Calls ``POST {base_url}/embeddings``; never tokenizes locally, so nothing is downloaded."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        batch_size: int = 64,
    ) -> None:
        from langchain_openai import OpenAIEmbeddings

        self.model = model
        self._dim: int | None = None
        self._client = OpenAIEmbeddings(
            model=model,
            base_url=base_url,
            # Local servers often need no key, but the client refuses to start without one.
            api_key=api_key or "unused",  # type: ignore[arg-type]
            check_embedding_ctx_length=False,  # send raw text: no tiktoken/transformers files
            tiktoken_enabled=False,
            chunk_size=batch_size,
            timeout=timeout_s,
            max_retries=max_retries,
        )

    @property
    def identity(self) -> str:
        return f"openai:{self.model}"

    @property
    def known_dim(self) -> int | None:
        return self._dim

    def dimension(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        try:
            rows: list[list[float]] = self._client.embed_documents(list(texts))
        except Exception as exc:
            raise _translate(exc) from exc
        vectors = np.asarray(rows, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise AgentError(
                "the embeddings endpoint returned a malformed answer", code=ErrorCode.LLM_BAD_RESPONSE
            )
        self._dim = int(vectors.shape[1])
        return normalize(vectors)


def _translate(exc: Exception) -> AgentError:
    import openai

    code = ErrorCode.LLM_UNAVAILABLE
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        code = ErrorCode.LLM_UNAUTHORIZED
    elif isinstance(exc, openai.RateLimitError):
        code = ErrorCode.LLM_RATE_LIMITED
    elif isinstance(exc, openai.APITimeoutError):
        code = ErrorCode.LLM_TIMEOUT
    elif isinstance(exc, openai.BadRequestError | openai.NotFoundError):
        code = ErrorCode.LLM_BAD_RESPONSE
    return AgentError(f"embeddings endpoint: {type(exc).__name__}: {exc}", code=code)


def build_embedder(settings: Settings, **overrides: Any) -> Embedder:
    """The embedder CHATGW_EMBEDDINGS selects (offline hashing unless told otherwise)."""
    if settings.embeddings == "offline":
        return HashingEmbedder(settings.embeddings_dim)
    if not settings.embeddings_model:
        raise ConfigError("CHATGW_EMBEDDINGS=openai needs CHATGW_EMBEDDINGS_MODEL")
    key = settings.embeddings_api_key or settings.llm_api_key
    return OpenAIEmbedder(
        settings.embeddings_model,
        base_url=settings.embeddings_base_url or settings.llm_base_url,
        api_key=key.get_secret_value() if key is not None else None,
        timeout_s=settings.llm_timeout_s,
        max_retries=settings.llm_max_retries,
        **overrides,
    )
