"""BM25, title matches and rank fusion: the pieces of hybrid retrieval."""

from __future__ import annotations

from pathlib import Path

from cli.ingest import ingest
from shared.settings import load_settings
from worker.agent.embeddings import HashingEmbedder
from worker.agent.faiss_retriever import FaissRetriever
from worker.agent.fusion import reciprocal_rank_fusion
from worker.agent.lexical import LexicalIndex, TitleIndex, query_terms, words

DOCS = {
    "config.md": "# Configuration\n\n`CHATGW_REDIS_URL`, `CHATGW_KEY_PREFIX`, `CHATGW_PORT` and "
    "`CHATGW_HOST` configure chatgw. chatgw reads chatgw settings.\n",
    "intro.md": "# What is chatgw?\n\nA WebSocket gateway for LLM agents.\n",
    "faq.md": "# FAQ\n\n## Can I use Ollama?\n\nYes: any OpenAI-compatible server works, chatgw included.\n",
}


def test_identifiers_stay_whole_and_drop_their_namespace() -> None:
    assert words("Set CHATGW_REDIS_URL now") == ["set", "chatgw_redis_url", "redis", "url", "now"]
    assert words("the conversation_id field")[1:4] == ["conversation_id", "convers", "id"]
    assert query_terms("Which CHATGW_PORT?") == ["chatgw_port", "port"]


def test_a_question_of_common_words_asks_for_an_overview() -> None:
    assert query_terms("what is this?") == ["overview", "introduct"]
    assert query_terms("") == []


def test_bm25_discounts_a_word_found_everywhere() -> None:
    ids = [1, 2, 3]
    index = LexicalIndex(ids, ["Configuration", "Intro", "FAQ"], list(DOCS.values()))
    assert index.search("chatgw and ollama", 3)[0][0] == 3, "the rare word decides"
    assert index.search("nothing here matches", 3) == []
    assert LexicalIndex([], [], []).search("anything", 3) == []


def test_a_heading_that_is_the_question_is_found() -> None:
    titles = TitleIndex(
        [1, 2, 3],
        ["Frequently asked questions — What is chatgw?", "What is chatgw? An overview", "Deployment"],
    )
    assert titles.search("What is chatgw?", 5) == [2, 1]  # the shorter, more specific title first
    assert titles.search("chatgw", 5) == [], "one word is not a phrase"


def test_reciprocal_rank_fusion() -> None:
    assert reciprocal_rank_fusion([["a", "b", "c"], ["b", "c"]]) == ["b", "c", "a"]
    assert reciprocal_rank_fusion([["a", "b"], ["b", "a"]], [1.0, 0.2]) == ["a", "b"]
    assert reciprocal_rank_fusion([[], []]) == []


def test_the_retriever_fuses_and_drops_hash_collisions(tmp_path: Path) -> None:
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
    settings = load_settings(_env_file=None, index_path=tmp_path / "index", chunk_size=200, chunk_overlap=20)
    embedder = HashingEmbedder(64)  # tiny: every text collides with some other
    ingest([tmp_path], settings, embedder=embedder)
    retriever = FaissRetriever(settings.index_path, embedder)
    assert retriever.snapshot is not None
    assert retriever.search(retriever.snapshot, "What is chatgw?", 1)[0].id == "intro.md#0"
    assert retriever.search(retriever.snapshot, "can I use ollama", 1)[0].id == "faq.md#0"
    assert retriever.search(retriever.snapshot, "weather in paris", 3) == []
