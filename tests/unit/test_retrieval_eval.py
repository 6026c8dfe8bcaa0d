"""Retrieval quality on the sample corpus (a quality threshold, not a timing): hit@1 ≥ 0.9, hit@3 ≥ 0.97."""

from __future__ import annotations

import re

from bench.retrieval_eval import evaluate, load_cases
from cli.ingest import sample_corpus

NEWCOMER_WORDS = 6  # "what is this", "can I use ollama": short and vague, as a first question is


def test_eval_set_is_sound() -> None:
    cases = load_cases()
    assert len(cases) >= 60
    assert sum(len(c.question.split()) < NEWCOMER_WORDS for c in cases) >= 15, "short newcomer questions"
    docs = {p.name for p in sample_corpus().glob("*.md")}
    assert 8 <= len(docs) <= 15
    corpus = re.sub(r"\s+", " ", " ".join((sample_corpus() / d).read_text() for d in docs)).lower()
    for case in cases:
        assert set(case.expected) <= docs, case
        if len(case.question.split()) >= NEWCOMER_WORDS:  # short ones may be a heading word for word
            assert case.question.lower().rstrip("?.") not in corpus, (
                f"copied from the corpus: {case.question}"
            )
    assert {d for c in cases for d in c.expected} == docs  # every document is asked about
    assert len({c.question for c in cases}) == len(cases)


def test_hit_rates_on_the_sample_corpus() -> None:
    result = evaluate(k=3)
    misses = [(o.case.question, o.retrieved[:3]) for o in result.misses()]
    assert result.hit_rate_at(1) >= 0.9, [
        (o.case.question, o.retrieved[:1]) for o in result.outcomes if o.rank != 1
    ]
    assert result.hit_rate_at(3) >= 0.97, misses
    assert result.mrr >= 0.9
