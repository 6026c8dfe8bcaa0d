"""Where the agent's context comes from. Kept to one method so a FAISS index, a remote search
service or a test fake can all stand in."""

from __future__ import annotations

from typing import Protocol

from shared.protocol import Source


class Retriever(Protocol):
    async def retrieve(self, question: str, k: int) -> list[Source]:
        """At most ``k`` sources for ``question``, best first; [] when nothing matches."""
        ...


class NullRetriever:
    """No documents: the agent answers without context."""

    async def retrieve(self, question: str, k: int) -> list[Source]:
        return []
