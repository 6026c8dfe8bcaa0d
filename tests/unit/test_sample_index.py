"""`chatgw dev` keeps the sample corpus in the index current, and never touches an index without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import cli.ingest
from cli.ingest import ensure_sample_index, ingest
from shared.settings import load_settings
from worker.agent.index import indexed_files
from worker.corpus import CORPUS_DIR


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "corpus"
    shutil.copytree(CORPUS_DIR, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(cli.ingest, "sample_corpus", lambda: copy)
    return copy


def test_first_run_ingests_then_only_changes_are_written(tmp_path: Path, corpus: Path) -> None:
    settings = load_settings(_env_file=None, data_dir=tmp_path / "data")
    first = ensure_sample_index(settings)
    assert first is not None and len(first.added) == len(list(corpus.glob("*.md")))
    assert ensure_sample_index(settings) is None, "unchanged: nothing written"
    (corpus / "faq.md").write_text((corpus / "faq.md").read_text() + "\n## New\n\nA new answer here.\n")
    upgraded = ensure_sample_index(settings)
    assert upgraded is not None and upgraded.updated == ["faq.md"]


def test_an_index_of_other_documents_is_left_alone(tmp_path: Path, corpus: Path) -> None:
    settings = load_settings(_env_file=None, data_dir=tmp_path / "data")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("# Notes\n\nMy own document.\n")
    ingest([mine], settings)
    assert ensure_sample_index(settings) is None
    assert indexed_files(settings.index_path) == {str((mine / "notes.md").resolve())}
