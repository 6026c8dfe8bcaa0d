"""`chatgw ingest PATH... [--rebuild]`: read .md/.txt/.html files, chunk, embed, and update the index.

Idempotent: a file whose content (and chunking settings) did not change is not touched, so a second
run writes nothing; a changed file's chunks are replaced; files gone from a re-ingested directory are
removed. ``--rebuild`` starts from an empty index (needed after changing the embedder).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from shared.errors import ChatgwError, ConfigError
from shared.settings import Settings
from worker.agent.documents import SUFFIXES, read_document, split_document
from worker.agent.embeddings import Embedder, build_embedder
from worker.agent.index import IndexWriter, indexed_files, read_manifest

CHUNKER_VERSION = 1  # bump when documents.py splits differently: every file is then re-chunked


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "path: reason"
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_total: int = 0
    written: bool = False
    seconds: float = 0.0

    def summary(self, root: Path) -> str:
        lines = [
            f"ingest: {len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
            f"{len(self.removed)} removed file(s); chunks +{self.chunks_added} -{self.chunks_removed} "
            f"= {self.chunks_total} in {root} ({self.seconds:.2f} s)"
            + ("" if self.written else "; index unchanged")
        ]
        lines += [f"ingest: skipped {failure}" for failure in self.failed]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Found:
    path: Path
    key: str  # absolute path: a file's identity in the index
    label: str  # path relative to the root it was found under: the readable part of source ids


def _check_root(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"{path}: directory is not readable")
    elif path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"{path}: unsupported file type; chatgw ingest reads {', '.join(sorted(SUFFIXES))}")
    elif not os.access(path, os.R_OK):
        raise ConfigError(f"{path}: file is not readable")


def _walk(root: Path, failed: dict[str, str]) -> Iterator[_Found]:
    base = root.resolve()
    if not root.is_dir():
        yield _Found(root, str(base), root.name)
        return

    def on_error(exc: OSError) -> None:
        failed[str(exc.filename)] = exc.strerror or str(exc)

    for directory, dirs, files in os.walk(base, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, .venv, ...
        for name in sorted(files):
            path = Path(directory, name)
            if not name.startswith(".") and path.suffix.lower() in SUFFIXES:
                yield _Found(path, str(path), path.relative_to(base).as_posix())


def ingest(
    paths: Sequence[Path],
    settings: Settings,
    *,
    rebuild: bool = False,
    embedder: Embedder | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> IngestReport:
    """Bring the index at CHATGW_INDEX_PATH up to date with ``paths``. ConfigError on a bad path."""
    started = time.perf_counter()
    for path in paths:
        _check_root(path)  # all of them before any work: a typo must not half-update the index
    report = IngestReport()
    found: dict[str, _Found] = {}
    failed: dict[str, str] = {}  # path → why it could not be read
    for path in paths:
        for item in _walk(path, failed):
            found.setdefault(item.key, item)
    embedder = embedder or build_embedder(settings)
    chunking = f"c{CHUNKER_VERSION}:{settings.chunk_size}:{settings.chunk_overlap}"
    with IndexWriter(settings.index_path, embedder.identity, embedder.dimension(), rebuild=rebuild) as index:
        known = index.files()
        for n, item in enumerate(found.values()):
            if progress:
                progress(n, len(found), item.label)
            try:
                data = item.path.read_bytes()
            except OSError as exc:
                failed[item.key] = exc.strerror or str(exc)
                continue
            fingerprint = f"{hashlib.sha256(data).hexdigest()}/{chunking}"
            entry = known.get(item.key)
            if entry is not None and entry.fingerprint == fingerprint:
                report.unchanged.append(item.label)
                continue
            chunks = split_document(
                read_document(item.path, data), settings.chunk_size, settings.chunk_overlap
            )
            report.chunks_removed += len(index.chunks_of(item.key))
            index.put_file(
                item.key, item.label, fingerprint, chunks, embedder.embed([c.embedding_text for c in chunks])
            )
            report.chunks_added += len(chunks)
            (report.updated if entry is not None else report.added).append(item.label)
        if progress:
            progress(len(found), len(found), "")
        dirs = [p.resolve() for p in paths if p.is_dir()]
        for key in known.keys() - found.keys():
            # Gone from a directory we were given; not merely unreadable (nor under an unreadable dir).
            gone = any(Path(key).is_relative_to(d) for d in dirs) and not any(
                Path(key).is_relative_to(f) for f in failed
            )
            if gone:
                report.chunks_removed += index.remove_file(key)
                report.removed.append(known[key].label)
        report.written = index.commit()
        report.chunks_total = index.chunk_count
    report.failed = [f"{path}: {reason}" for path, reason in failed.items()]
    report.seconds = time.perf_counter() - started
    return report


class ProgressBar:
    """``[#####.....] 12/40 name`` on a terminal; nothing at all when the stream is not a TTY."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.enabled = stream.isatty()

    def __call__(self, done: int, total: int, name: str) -> None:
        if not self.enabled or total == 0:
            return
        filled = self.width * done // total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r\x1b[Kingest [{bar}] {done}/{total} {name[-40:]}")
        if done == total:
            self.stream.write("\r\x1b[K")
        self.stream.flush()


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    """The CLI command: 0 when everything was ingested, 1 when some files could not be read.

    A bad path or setting raises ConfigError, which `chatgw` prints and exits 2 on.
    """
    paths = [Path(p) for p in args.paths] + ([sample_corpus()] if args.sample else [])
    if not paths:
        raise ConfigError("nothing to ingest: name files or directories (PATH...), or --sample")
    try:
        report = ingest(paths, settings, rebuild=args.rebuild, progress=ProgressBar())
    except ConfigError:
        raise
    except ChatgwError as exc:
        print(f"chatgw ingest: {exc.message}", file=sys.stderr)
        return 1
    print(report.summary(settings.index_path))
    return 1 if report.failed else 0


def sample_corpus() -> Path:
    from worker.corpus import CORPUS_DIR

    return CORPUS_DIR


def ensure_sample_index(settings: Settings) -> IngestReport | None:
    """For `chatgw dev`: ingest the bundled sample corpus when CHATGW_INDEX_PATH has no index yet, and
    bring it up to date when the index holds it (after an upgrade changed it). None: nothing to do."""
    if read_manifest(settings.index_path) is None:
        return ingest([sample_corpus()], settings)
    corpus = sample_corpus().resolve()
    if not any(Path(path).is_relative_to(corpus) for path in indexed_files(settings.index_path)):
        return None  # an index of the user's own documents only: leave it alone
    report = ingest([corpus], settings)
    return report if report.written else None
