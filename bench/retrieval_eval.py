"""Retrieval quality on the sample corpus: hit@1, hit@3 and MRR, offline embedder.

    .venv/bin/python bench/retrieval_eval.py [--k 3] [--dim 1024] [--mode hybrid|dense|lexical] [--verbose]

Ingests worker/corpus into a temporary index with the real `chatgw ingest` code path, then asks every
question of bench/retrieval_eval.jsonl through the real retriever (``hybrid``: BM25 and the dense
index fused; ``dense`` or ``lexical`` alone, for comparison). A question is a hit at k when one of
its top-k chunks comes from one of its expected documents. MRR uses the rank of the first such chunk
in the top 10 (0 when there is none).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from cli.ingest import ingest, sample_corpus  # noqa: E402
from shared.settings import Settings, load_settings  # noqa: E402
from worker.agent.embeddings import HashingEmbedder  # noqa: E402
from worker.agent.faiss_retriever import FaissRetriever  # noqa: E402
from worker.agent.index import IndexSnapshot  # noqa: E402

EVAL_SET = Path(__file__).with_suffix(".jsonl")
MRR_DEPTH = 10
Mode = Literal["hybrid", "dense", "lexical"]


@dataclass(frozen=True)
class Case:
    question: str
    expected: tuple[str, ...]  # document labels (file names relative to the corpus)


@dataclass(frozen=True)
class Outcome:
    case: Case
    rank: int | None  # 1-based rank of the first chunk of an expected document, within MRR_DEPTH
    retrieved: tuple[str, ...]  # source ids, best first


@dataclass(frozen=True)
class EvalResult:
    k: int
    outcomes: tuple[Outcome, ...]
    seconds_per_query: float

    @property
    def hit_rate(self) -> float:
        return self.hit_rate_at(self.k)

    def hit_rate_at(self, n: int) -> float:
        return sum(o.rank is not None and o.rank <= n for o in self.outcomes) / len(self.outcomes)

    @property
    def mrr(self) -> float:
        return sum(1.0 / o.rank for o in self.outcomes if o.rank) / len(self.outcomes)

    def misses(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.rank is None or o.rank > self.k]


def load_cases(path: Path = EVAL_SET) -> list[Case]:
    cases = []
    for line in path.read_text().splitlines():
        if line.strip():
            raw = json.loads(line)
            cases.append(Case(raw["question"], tuple(raw["expected"])))
    return cases


def _document(source_id: str) -> str:
    return source_id.rsplit("#", 1)[0]


def _ranker(retriever: FaissRetriever, mode: Mode) -> Callable[[IndexSnapshot, str, int], list[str]]:
    def rank(snapshot: IndexSnapshot, question: str, depth: int) -> list[str]:
        if mode == "hybrid":
            return [s.id for s in retriever.search(snapshot, question, depth)]
        if mode == "lexical":
            return [row.source_id for row, _ in snapshot.search_text(question, depth)]
        vector = retriever.embedder.embed([question])[0]
        return [row.source_id for row, _ in snapshot.search(vector, depth)]

    return rank


def evaluate(
    k: int = 3, dim: int = 1024, cases: list[Case] | None = None, mode: Mode = "hybrid"
) -> EvalResult:
    cases = cases if cases is not None else load_cases()
    with tempfile.TemporaryDirectory(prefix="chatgw-eval-") as tmp:
        settings: Settings = load_settings(index_path=Path(tmp), embeddings="offline", embeddings_dim=dim)
        embedder = HashingEmbedder(dim)
        ingest([sample_corpus()], settings, embedder=embedder)
        retriever = FaissRetriever(settings.index_path, embedder)
        snapshot = retriever.snapshot
        assert snapshot is not None
        outcomes = []
        ranker = _ranker(retriever, mode)
        started = time.perf_counter()
        for case in cases:
            ids = tuple(ranker(snapshot, case.question, MRR_DEPTH))
            docs = [_document(i) for i in ids]
            rank = next((n for n, d in enumerate(docs, 1) if d in case.expected), None)
            outcomes.append(Outcome(case, rank, ids))
        per_query = (time.perf_counter() - started) / max(1, len(cases))
    return EvalResult(k, tuple(outcomes), per_query)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid")
    parser.add_argument("--verbose", action="store_true", help="print every question's ranking")
    args = parser.parse_args(argv)
    result = evaluate(args.k, args.dim, mode=args.mode)
    for outcome in result.outcomes if args.verbose else result.misses():
        mark = "hit " if outcome.rank is not None and outcome.rank <= args.k else "MISS"
        print(f"{mark} rank={outcome.rank} expected={list(outcome.case.expected)}")
        print(f"     {outcome.case.question}")
        print(f"     got {list(outcome.retrieved[: args.k])}")
    hits = {n: sum(o.rank is not None and o.rank <= n for o in result.outcomes) for n in (1, 3)}
    total = len(result.outcomes)
    print(
        f"questions={total} hit@1={hits[1] / total:.3f} ({hits[1]}/{total}) "
        f"hit@3={hits[3] / total:.3f} ({hits[3]}/{total}) MRR@{MRR_DEPTH}={result.mrr:.3f} "
        f"search={result.seconds_per_query * 1000:.2f} ms/query "
        f"({args.mode}, offline embedder, dim {args.dim})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
