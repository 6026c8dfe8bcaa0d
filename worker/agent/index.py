"""The on-disk retrieval index: FAISS vectors + SQLite chunks, published atomically as generations.

Layout of the index directory (``CHATGW_INDEX_PATH``)::

    manifest.json          which generation is current, and which embedder/dim built it
    vectors-<N>.faiss      faiss.write_index of an IndexIDMap(IndexFlatIP): id → unit vector
    chunks-<N>.sqlite      files (path, label, fingerprint) and chunks (id, source_id, title, text)
    .lock                  held by a writer (one ingest at a time)

A writer builds generation N+1 next to N, then ``os.replace``-s the manifest: readers see either all
of N or all of N+1, never a mix. Nothing is pickled. Vector ids are never reused, so an id names one
chunk forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from shared.errors import ConfigError
from worker.agent.documents import Chunk
from worker.agent.embeddings import Vectors
from worker.agent.lexical import LexicalIndex, TitleIndex

MANIFEST = "manifest.json"
FORMAT = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, label TEXT NOT NULL, fingerprint TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, ordinal INTEGER NOT NULL,
    source_id TEXT NOT NULL, title TEXT NOT NULL, text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_path ON chunks (path);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Manifest:
    format: int
    version: int
    embedder: str
    dim: int
    vectors: str  # file names inside the index directory
    chunks_db: str
    chunk_count: int
    file_count: int
    updated_at: float


def read_manifest(root: Path) -> Manifest | None:
    try:
        raw = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{root / MANIFEST}: unreadable index manifest ({exc})") from exc
    if raw.get("format") != FORMAT:
        raise ConfigError(f"{root}: index format {raw.get('format')!r} is not {FORMAT}; rebuild it")
    return Manifest(**{k: raw[k] for k in Manifest.__dataclass_fields__})


def indexed_files(root: Path) -> set[str]:
    """Paths of the files the current generation at ``root`` holds (none when there is no index)."""
    manifest = read_manifest(root)
    if manifest is None:
        return set()
    with contextlib.closing(_open_generation_db(root / manifest.chunks_db)) as db:
        return {str(row[0]) for row in db.execute("SELECT path FROM files")}


def check_embedder(manifest: Manifest, root: Path, identity: str, dim: int | None) -> None:
    """ConfigError unless the index was built by this embedder (vectors of two embedders don't compare)."""
    if manifest.embedder != identity or (dim is not None and manifest.dim != dim):
        raise ConfigError(
            f"the index at {root} was built with embedder {manifest.embedder} (dim {manifest.dim}), "
            f"but this process uses {identity}" + (f" (dim {dim})" if dim is not None else "")
            + ": set CHATGW_EMBEDDINGS / CHATGW_EMBEDDINGS_DIM / CHATGW_EMBEDDINGS_MODEL to match, or "
            "rebuild it with `chatgw ingest PATH... --rebuild`"
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChunkRow:
    id: int
    source_id: str
    title: str
    text: str


class IndexSnapshot:
    """One generation, read-only and fully in memory: safe to search from several threads.

    ``lexical`` (BM25) and ``titles`` (whole-question title matches) index the same chunks, built here
    from the rows (see lexical.py).
    """

    def __init__(self, manifest: Manifest, index: Any, rows: dict[int, ChunkRow]) -> None:
        self.manifest = manifest
        self.index = index
        self.rows = rows
        ordered = list(rows.values())
        ids, titles = [r.id for r in ordered], [r.title for r in ordered]
        self.lexical = LexicalIndex(ids, titles, [r.text for r in ordered])
        self.titles = TitleIndex(ids, titles)

    @classmethod
    def load(cls, root: Path, attempts: int = 3) -> IndexSnapshot | None:
        """The current generation, or None when there is no index at ``root``."""
        for attempt in range(attempts):
            manifest = read_manifest(root)
            if manifest is None:
                return None
            try:
                return cls._load(root, manifest)
            except FileNotFoundError:
                # A writer published N+1 and deleted N between our two reads: read the manifest again.
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _load(cls, root: Path, manifest: Manifest) -> IndexSnapshot:
        with contextlib.closing(_open_generation_db(root / manifest.chunks_db)) as db:
            rows = {r[0]: ChunkRow(*r) for r in db.execute("SELECT id, source_id, title, text FROM chunks")}
        return cls(manifest, _read_vectors(root / manifest.vectors), rows)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search_text(self, question: str, k: int) -> list[tuple[ChunkRow, float]]:
        """Up to ``k`` chunks by BM25 score, best first; those sharing no word left out."""
        return [(self.rows[i], score) for i, score in self.lexical.search(question, k) if i in self.rows]

    def search_titles(self, question: str, k: int) -> list[ChunkRow]:
        """Chunks whose title contains the question's words in order, most specific title first."""
        return [self.rows[i] for i in self.titles.search(question, k) if i in self.rows]

    def search(self, vector: Vectors, k: int) -> list[tuple[ChunkRow, float]]:
        """Up to ``k`` chunks by cosine similarity, best first; those sharing nothing (score ≤ 0) left out."""
        if k <= 0 or self.size == 0:
            return []
        scores, ids = self.index.search(vector.reshape(1, -1), min(k, self.size))
        hits = []
        for score, chunk_id in zip(scores[0], ids[0], strict=True):
            row = self.rows.get(int(chunk_id))
            if row is not None and score > 0:
                hits.append((row, float(score)))
        return hits


@dataclass(frozen=True, slots=True)
class FileEntry:
    label: str
    fingerprint: str


class IndexWriter:
    """Edits a working copy of the current generation; :meth:`commit` publishes it (if anything changed).

    Use as a context manager: it holds the directory's lock until closed.
    """

    def __init__(self, root: Path, identity: str, dim: int, *, rebuild: bool = False) -> None:
        self.root = root
        self.identity = identity
        self.dim = dim
        root.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_lock(root)
        try:
            self._version = _current_version(root)
            self._base = None if rebuild else read_manifest(root)
            if self._base is not None:
                check_embedder(self._base, root, identity, dim)
            self._db = sqlite3.connect(":memory:")
            self._index = self._open_working_copy()
        except BaseException:
            self._lock.close()
            raise
        self._dirty = rebuild

    def _open_working_copy(self) -> Any:
        if self._base is None:
            self._db.executescript(_SCHEMA)
            return faiss.IndexIDMap(faiss.IndexFlatIP(self.dim))
        with contextlib.closing(_open_generation_db(self.root / self._base.chunks_db)) as source:
            source.backup(self._db)
        return _read_vectors(self.root / self._base.vectors)

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()
        self._lock.close()  # closing the file releases the flock

    # ------------------------------------------------------------ reading the working copy

    def files(self) -> dict[str, FileEntry]:
        rows = self._db.execute("SELECT path, label, fingerprint FROM files")
        return {path: FileEntry(label, fp) for path, label, fp in rows}

    @property
    def chunk_count(self) -> int:
        return int(self._index.ntotal)

    def chunks_of(self, path: str) -> list[tuple[int, str]]:
        """(vector id, source id) of a file's chunks, in order."""
        rows = self._db.execute("SELECT id, source_id FROM chunks WHERE path = ? ORDER BY ordinal", (path,))
        return [(int(i), str(s)) for i, s in rows]

    # ------------------------------------------------------------ editing

    def remove_file(self, path: str) -> int:
        """Drop a file and its chunks; returns how many chunks went."""
        ids = [i for i, _ in self.chunks_of(path)]
        if ids:
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))
        with self._db:
            self._db.execute("DELETE FROM chunks WHERE path = ?", (path,))
            gone = self._db.execute("DELETE FROM files WHERE path = ?", (path,)).rowcount
        self._dirty = self._dirty or bool(ids) or gone > 0
        return len(ids)

    def put_file(
        self, path: str, label: str, fingerprint: str, chunks: Sequence[Chunk], vectors: Vectors
    ) -> None:
        """Add a file, or replace all of its chunks."""
        if len(chunks) != len(vectors) or (len(vectors) and vectors.shape[1] != self.dim):
            raise ValueError(f"{len(chunks)} chunks but vectors of shape {vectors.shape} (dim {self.dim})")
        self.remove_file(path)
        taken = self._db.execute("SELECT 1 FROM files WHERE label = ? AND path != ?", (label, path))
        if taken.fetchone() is not None:
            label = path  # two roots with the same relative name: keep source ids unique
        first = self._next_id(len(chunks))
        ids = np.arange(first, first + len(chunks), dtype=np.int64)
        with self._db:
            self._db.execute("INSERT INTO files VALUES (?, ?, ?)", (path, label, fingerprint))
            self._db.executemany(
                "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (int(i), path, n, f"{label}#{n}", c.title, c.text)
                    for n, (i, c) in enumerate(zip(ids, chunks, strict=True))
                ],
            )
        if len(chunks):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self._dirty = True

    def _next_id(self, count: int) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'next_id'").fetchone()
        first = int(row[0]) if row else 1
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_id', ?)", (str(first + count),))
        return first

    # ------------------------------------------------------------ publishing

    def commit(self) -> bool:
        """Publish the working copy as the next generation; False (and no write at all) if unchanged."""
        if not self._dirty:
            return False
        # Numbered after whatever is published (even when rebuilding), so no reader's files are overwritten.
        version = self._version + 1
        vectors, chunks_db = f"vectors-{version}.faiss", f"chunks-{version}.sqlite"
        tmp = f".tmp-{os.getpid()}-{version}"
        faiss.write_index(self._index, str(self.root / f"{tmp}.faiss"))
        _publish(self.root / f"{tmp}.faiss", self.root / vectors)
        with contextlib.closing(sqlite3.connect(self.root / f"{tmp}.sqlite")) as target:
            self._db.backup(target)
        _publish(self.root / f"{tmp}.sqlite", self.root / chunks_db)
        manifest = Manifest(
            format=FORMAT,
            version=version,
            embedder=self.identity,
            dim=self.dim,
            vectors=vectors,
            chunks_db=chunks_db,
            chunk_count=self.chunk_count,
            file_count=len(self.files()),
            updated_at=time.time(),
        )
        (self.root / f"{tmp}.json").write_text(json.dumps(asdict(manifest), indent=2) + "\n")
        _publish(self.root / f"{tmp}.json", self.root / MANIFEST)  # the commit point
        self._base, self._version, self._dirty = manifest, version, False
        self._remove_stale(keep={vectors, chunks_db})
        return True

    def _remove_stale(self, keep: set[str]) -> None:
        for entry in self.root.iterdir():
            stale = entry.name.startswith((".tmp-", "vectors-", "chunks-")) and entry.name not in keep
            if stale:
                with contextlib.suppress(OSError):
                    entry.unlink()


def _current_version(root: Path) -> int:
    try:
        manifest = read_manifest(root)
    except ConfigError:
        manifest = None  # unreadable or old format: only a rebuild gets past it, and then it's replaced
    return manifest.version if manifest else 0


def _open_generation_db(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(path)
    # immutable=1: a generation file never changes, so SQLite needs no locks and writes no journal.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)


def _read_vectors(path: Path) -> Any:
    try:
        return faiss.read_index(str(path))
    except RuntimeError:
        if not path.exists():
            raise FileNotFoundError(path) from None  # deleted by a writer: the caller retries
        raise


def _publish(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())  # the data is on disk before the name points at it
    os.replace(tmp, final)


def _acquire_lock(root: Path) -> IO[bytes]:
    handle = open(root / ".lock", "ab")  # noqa: SIM115 - held until IndexWriter.close()
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"another `chatgw ingest` is writing the index at {root}; try again") from None
    return handle
