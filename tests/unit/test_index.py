"""The on-disk index (generations, add/replace/remove by file), the FAISS retriever (reload, mismatch,
no index), ingest (idempotence, changes, --rebuild, unreadable paths) and document extraction."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest

from cli.ingest import IngestReport, ProgressBar, ingest
from shared.errors import ConfigError
from shared.settings import Settings, load_settings
from worker.agent.documents import Chunk, html_to_text, read_document, split_document
from worker.agent.embeddings import HashingEmbedder
from worker.agent.faiss_retriever import FaissRetriever
from worker.agent.index import MANIFEST, IndexSnapshot, IndexWriter, read_manifest

DIM = 256
EMBEDDER = HashingEmbedder(DIM)


def chunks(*texts: str) -> tuple[list[Chunk], np.ndarray]:  # type: ignore[type-arg]
    items = [Chunk(title="T", text=t) for t in texts]
    return items, EMBEDDER.embed([c.embedding_text for c in items])


def write(index: Path, path: str, *texts: str, fingerprint: str = "f1", rebuild: bool = False) -> None:
    with IndexWriter(index, EMBEDDER.identity, DIM, rebuild=rebuild) as writer:
        writer.put_file(path, Path(path).name, fingerprint, *chunks(*texts))
        writer.commit()


def index_files(root: Path) -> dict[str, int]:
    """name → mtime_ns of every file in the index directory."""
    return {p.name: p.stat().st_mtime_ns for p in root.iterdir()}


# ---------------------------------------------------------------- IndexWriter / IndexSnapshot


def test_add_replace_remove_by_file(tmp_path: Path) -> None:
    root = tmp_path / "index"
    write(root, "/docs/a.md", "redis streams keep the event log", "pub/sub carries live events")
    write(root, "/docs/b.md", "docker compose deployment")
    snap = IndexSnapshot.load(root)
    assert snap is not None and snap.size == 3 and snap.manifest.file_count == 2
    assert sorted(r.source_id for r in snap.rows.values()) == ["a.md#0", "a.md#1", "b.md#0"]
    old_ids = {r.id for r in snap.rows.values() if r.source_id.startswith("a.md")}

    write(root, "/docs/a.md", "stop frames cancel a run", fingerprint="f2")  # replace: 2 chunks → 1
    snap = IndexSnapshot.load(root)
    assert snap is not None and snap.size == 2
    a_rows = [r for r in snap.rows.values() if r.source_id.startswith("a.md")]
    assert [r.text for r in a_rows] == ["stop frames cancel a run"]
    assert not old_ids & {r.id for r in a_rows}  # ids are never reused

    with IndexWriter(root, EMBEDDER.identity, DIM) as writer:
        assert writer.remove_file("/docs/b.md") == 1
        assert writer.remove_file("/docs/unknown.md") == 0
        writer.commit()
    snap = IndexSnapshot.load(root)
    assert snap is not None and snap.size == 1 and snap.manifest.file_count == 1


def test_search_round_trip_after_reload_from_disk(tmp_path: Path) -> None:
    root = tmp_path / "index"
    write(root, "/d/resume.md", "reconnect and resume a run from the last seq")
    write(root, "/d/deploy.md", "docker compose deployment with health checks")
    snap = IndexSnapshot.load(root)
    assert snap is not None
    hits = snap.search(EMBEDDER.embed(["how do I resume after reconnecting"])[0], 2)
    assert [row.source_id for row, _ in hits] == ["resume.md#0"]  # deploy.md shares no word
    assert snap.search(EMBEDDER.embed(["zebra xylophone"])[0], 3) == []  # nothing shared: no hits


def test_commit_without_changes_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "index"
    write(root, "/d/a.md", "text")
    before = index_files(root)
    with IndexWriter(root, EMBEDDER.identity, DIM) as writer:
        assert writer.commit() is False
    assert index_files(root) == before


def test_generations_and_no_pickle_on_disk(tmp_path: Path) -> None:
    root = tmp_path / "index"
    write(root, "/d/a.md", "one")
    write(root, "/d/a.md", "two", fingerprint="f2")
    write(root, "/d/a.md", "three", fingerprint="f3", rebuild=True)  # numbered after v2, never reusing it
    manifest = read_manifest(root)
    assert manifest is not None and manifest.version == 3
    assert sorted(p.name for p in root.iterdir()) == [".lock", "chunks-3.sqlite", MANIFEST, "vectors-3.faiss"]
    for path in root.iterdir():
        data = path.read_bytes()
        assert not data.startswith(b"\x80"), f"{path.name} looks like a pickle"
    assert (root / "chunks-3.sqlite").read_bytes().startswith(b"SQLite format 3\x00")


def test_writer_refuses_another_embedder_unless_rebuilding(tmp_path: Path) -> None:
    root = tmp_path / "index"
    write(root, "/d/a.md", "one")
    with pytest.raises(ConfigError, match="--rebuild"):
        IndexWriter(root, EMBEDDER.identity, DIM * 2)
    with IndexWriter(root, EMBEDDER.identity, DIM * 2, rebuild=True) as writer:
        assert writer.files() == {}


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    root = tmp_path / "index"
    with IndexWriter(root, EMBEDDER.identity, DIM), pytest.raises(ConfigError, match="another"):
        IndexWriter(root, EMBEDDER.identity, DIM)
    IndexWriter(root, EMBEDDER.identity, DIM).close()  # released


# ---------------------------------------------------------------- FaissRetriever


async def test_retriever_reloads_when_another_writer_publishes(tmp_path: Path) -> None:
    root = tmp_path / "index"
    write(root, "/d/a.md", "redis streams keep the event log")
    retriever = FaissRetriever(root, EMBEDDER, check_interval_s=0)
    assert [s.id for s in await retriever.retrieve("redis streams", 3)] == ["a.md#0"]

    write(root, "/d/b.md", "graceful shutdown hands runs back to the queue")
    sources = await retriever.retrieve("graceful shutdown", 3)
    assert sources[0].id == "b.md#0" and sources[0].title == "T"
    assert sources[0].snippet == "graceful shutdown hands runs back to the queue"
    assert retriever.snapshot is not None and retriever.snapshot.manifest.version == 2


async def test_retriever_checks_for_changes_at_most_once_per_interval(tmp_path: Path) -> None:
    root = tmp_path / "index"
    write(root, "/d/a.md", "redis streams")
    retriever = FaissRetriever(root, EMBEDDER, check_interval_s=3600)
    write(root, "/d/b.md", "graceful shutdown")
    assert await retriever.retrieve("graceful shutdown", 3) == []  # still the loaded generation
    retriever.check_interval_s = 0
    assert [s.id for s in await retriever.retrieve("graceful shutdown", 3)] == ["b.md#0"]


async def test_no_index_returns_nothing_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.agent.faiss_retriever")
    retriever = FaissRetriever(tmp_path / "missing", EMBEDDER, check_interval_s=0)
    assert await retriever.retrieve("anything at all", 3) == []
    assert await retriever.retrieve("anything else", 3) == []
    assert len([r for r in caplog.records if "no retrieval index" in r.message]) == 1
    write(tmp_path / "missing", "/d/a.md", "anything at all")  # appears later: picked up
    assert len(await retriever.retrieve("anything at all", 3)) == 1


def test_retriever_with_another_embedder_fails_at_start(tmp_path: Path) -> None:
    root = tmp_path / "index"
    write(root, "/d/a.md", "one")
    with pytest.raises(ConfigError, match="built with embedder hashing-v1 \\(dim 256\\)"):
        FaissRetriever(root, HashingEmbedder(DIM * 2))


async def test_retriever_keeps_its_generation_when_a_reload_is_incompatible(tmp_path: Path) -> None:
    root = tmp_path / "index"
    write(root, "/d/a.md", "redis streams")
    retriever = FaissRetriever(root, EMBEDDER, check_interval_s=0)
    with IndexWriter(root, EMBEDDER.identity, DIM * 2, rebuild=True) as writer:
        writer.put_file("/d/b.md", "b.md", "f", [Chunk("T", "x")], HashingEmbedder(DIM * 2).embed(["x"]))
        writer.commit()
    assert [s.id for s in await retriever.retrieve("redis streams", 3)] == ["a.md#0"]


# ---------------------------------------------------------------- ingest


def make_corpus(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "resume.md").write_text(
        "# Resume\n\nIntro.\n\n## After a disconnect\n\nReconnect and send resume with after_seq.\n"
    )
    (root / "sub" / "notes.txt").write_text("Plain text notes about graceful shutdown of workers.\n")
    (root / "sub" / "page.html").write_text(
        "<html><head><title>Deploy guide</title><style>.x{color:red}</style></head><body>"
        "<h1>Deploy</h1><p>Use docker compose.</p><script>var secret = 1;</script></body></html>"
    )
    (root / "ignored.pdf").write_bytes(b"%PDF-1.4")
    (root / ".hidden.md").write_text("# Hidden\n")
    return root


def settings_for(tmp_path: Path) -> Settings:
    return load_settings(index_path=tmp_path / "index", embeddings_dim=DIM, chunk_size=200, chunk_overlap=20)


def source_ids(settings: Settings) -> dict[int, str]:
    snap = IndexSnapshot.load(settings.index_path)
    assert snap is not None
    return {r.id: r.source_id for r in snap.rows.values()}


def run(settings: Settings, *paths: Path, rebuild: bool = False) -> IngestReport:
    return ingest(list(paths), settings, rebuild=rebuild, embedder=EMBEDDER)


def test_ingest_is_idempotent(tmp_path: Path) -> None:
    corpus, settings = make_corpus(tmp_path / "corpus"), settings_for(tmp_path)
    first = run(settings, corpus)
    assert sorted(first.added) == ["resume.md", "sub/notes.txt", "sub/page.html"]
    assert first.written and first.chunks_total == first.chunks_added > 0
    ids, files = source_ids(settings), index_files(settings.index_path)

    second = run(settings, corpus)
    assert (second.added, second.updated, second.removed) == ([], [], [])
    assert sorted(second.unchanged) == sorted(first.added) and not second.written
    assert source_ids(settings) == ids and index_files(settings.index_path) == files


def test_ingest_replaces_changed_files_and_removes_deleted_ones(tmp_path: Path) -> None:
    corpus, settings = make_corpus(tmp_path / "corpus"), settings_for(tmp_path)
    run(settings, corpus)
    before = source_ids(settings)
    (corpus / "resume.md").write_text("# Resume\n\nCompletely new text about resuming runs.\n")
    (corpus / "sub" / "notes.txt").unlink()
    report = run(settings, corpus)
    assert (report.updated, report.removed, report.added) == (["resume.md"], ["sub/notes.txt"], [])
    after = source_ids(settings)
    assert not any(s.startswith("sub/notes.txt") for s in after.values())
    kept = {i for i, s in before.items() if s.startswith("sub/page.html")}
    assert kept <= after.keys()  # the untouched file kept its chunks (same ids)
    resume = {i for i, s in after.items() if s.startswith("resume.md")}
    assert resume and not resume & before.keys()  # the changed file got new chunks


def test_ingest_a_single_file_does_not_remove_the_others(tmp_path: Path) -> None:
    corpus, settings = make_corpus(tmp_path / "corpus"), settings_for(tmp_path)
    run(settings, corpus)
    report = run(settings, corpus / "resume.md")
    assert report.unchanged == ["resume.md"] and report.removed == [] and not report.written


def test_ingest_rebuild_starts_over(tmp_path: Path) -> None:
    corpus, settings = make_corpus(tmp_path / "corpus"), settings_for(tmp_path)
    run(settings, corpus)
    report = run(settings, corpus / "sub", rebuild=True)
    assert sorted(report.added) == ["notes.txt", "page.html"] and report.written
    assert all(not s.startswith("resume.md") for s in source_ids(settings).values())


def test_ingest_rechunks_when_chunking_settings_change(tmp_path: Path) -> None:
    corpus, settings = make_corpus(tmp_path / "corpus"), settings_for(tmp_path)
    run(settings, corpus)
    changed = load_settings(
        index_path=settings.index_path, embeddings_dim=DIM, chunk_size=300, chunk_overlap=20
    )
    assert len(run(changed, corpus).updated) == 3


def test_ingest_refuses_bad_paths_before_touching_the_index(tmp_path: Path) -> None:
    corpus, settings = make_corpus(tmp_path / "corpus"), settings_for(tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        run(settings, corpus, tmp_path / "nope")
    with pytest.raises(ConfigError, match="unsupported file type"):
        run(settings, corpus / "ignored.pdf")
    assert not settings.index_path.exists()


def test_unreadable_file_is_reported_and_keeps_its_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus, settings = make_corpus(tmp_path / "corpus"), settings_for(tmp_path)
    run(settings, corpus)
    (corpus / "resume.md").write_text("# Resume\n\nchanged, but we cannot read it\n")
    read_bytes = Path.read_bytes

    def refuse(self: Path) -> bytes:
        if self.name == "resume.md":  # chmod 0 does not stop root, which the tests may run as
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    report = run(settings, corpus)
    assert len(report.failed) == 1 and "resume.md: Permission denied" in report.failed[0]
    assert report.removed == [] and any(s.startswith("resume.md") for s in source_ids(settings).values())


def test_progress_bar_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    piped, terminal = io.StringIO(), Terminal()
    for stream in (piped, terminal):
        bar = ProgressBar(stream, width=10)
        bar(1, 4, "a.md")
        bar(4, 4, "")
    assert piped.getvalue() == ""
    assert "[##........] 1/4 a.md" in terminal.getvalue()


# ---------------------------------------------------------------- documents


def test_html_extraction_skips_script_and_style_and_keeps_headings() -> None:
    title, text = html_to_text(
        "<html><head><title> Guide </title><script>alert(1)</script></head><body>"
        "<h1>Deploy</h1><p>Use <b>docker</b> compose.</p><style>p{}</style>"
        "<h2>Health &amp; readiness</h2><ul><li>one</li><li>two</li></ul></body></html>"
    )
    assert title == "Guide"
    assert "alert" not in text and "p{}" not in text
    assert text == "# Deploy\n\nUse docker compose.\n\n## Health & readiness\n\none\n\ntwo"


def test_markdown_titles_come_from_headings() -> None:
    doc = read_document(
        Path("guide.md"), b"# Guide\n\nIntro text.\n\n## Install\n\nRun pip.\n\n### Extras\n\nMore.\n"
    )
    titles = [c.title for c in split_document(doc, 200, 20)]
    assert titles == ["Guide", "Guide — Install", "Guide — Install — Extras"]
    html = read_document(Path("p.html"), b"<title>Page</title><h2>Part</h2><p>Body text</p>")
    assert [(c.title, c.text) for c in split_document(html, 200, 20)] == [("Page — Part", "Body text")]
    text = read_document(Path("my_notes.txt"), b"# not a heading in a text file")
    assert [c.title for c in split_document(text, 200, 20)] == ["my notes"]


def test_first_heading_ignores_code_fences() -> None:
    doc = read_document(Path("x.md"), b"```bash\n# a shell comment\n```\n\n## Real heading\n\ntext\n")
    assert doc.title == "Real heading"
