"""Retrieval quality on the sample corpus (a quality threshold, not a timing): hit@3 ≥ 0.9."""

from __future__ import annotations

import re

from bench.retrieval_eval import evaluate, load_cases
from cli.ingest import sample_corpus


def test_eval_set_is_sound() -> None:
    cases = load_cases()
    assert len(cases) >= 20
    docs = {p.name for p in sample_corpus().glob("*.md")}
    assert 8 <= len(docs) <= 15
    corpus = re.sub(r"\s+", " ", " ".join((sample_corpus() / d).read_text() for d in docs)).lower()
    for case in cases:
        assert set(case.expected) <= docs, case
        assert case.question.lower().rstrip("?.") not in corpus, f"copied from the corpus: {case.question}"
    assert {d for c in cases for d in c.expected} == docs  # every document is asked about


def test_hit_rate_at_3_on_the_sample_corpus() -> None:
    result = evaluate(k=3)
    misses = [(o.case.question, o.retrieved[:3]) for o in result.misses()]
    assert result.hit_rate >= 0.9, misses
    assert result.mrr >= 0.7
