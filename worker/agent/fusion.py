"""Reciprocal rank fusion: one ranking out of several, by rank only (Cormack, Clarke & Büttcher, 2009).

Scores of BM25 and of cosine similarity are on unrelated scales; ranks are not. Each ranking gives an
item ``weight / (k + rank)``; the item with the largest sum comes first. A small ``k`` lets a clear
first place in one ranking win over a middling place in both.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

DEFAULT_K = 20


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]], weights: Sequence[float] | None = None, k: float = DEFAULT_K
) -> list[K]:
    """Items of all ``rankings`` (each best first), fused best first; ties keep first-seen order."""
    weights = weights if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    scores: dict[K, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return sorted(scores, key=lambda item: -scores[item])  # sorted() is stable
