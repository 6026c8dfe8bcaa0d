"""`chatgw ingest` as a real subprocess, and a real worker answering from the index it built."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from client import ChatgwConnection
from shared.testing.stack import ROOT, Stack, wait_for
from worker.agent.index import IndexSnapshot


def make_corpus(root: Path) -> Path:
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "resume.md").write_text(
        "# Resuming runs\n\n## After a disconnect\n\n"
        "A client that lost its connection reconnects and sends resume with after_seq, "
        "the last seq it saw. The gateway replays the stored events and then streams live ones.\n"
    )
    (root / "guides" / "deploy.html").write_text(
        "<html><head><title>Deployment</title><script>var x = 'resume';</script></head><body>"
        "<h2>Compose</h2><p>docker compose up starts redis, a gateway and a worker.</p></body></html>"
    )
    (root / "faq.txt").write_text("Closing the browser tab never cancels an answer; send stop instead.\n")
    return root


def chatgw(*args: str, index: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATGW_")}
    env.update({"CHATGW_INDEX_PATH": str(index), "PYTHONPATH": str(ROOT)})
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_ingest_command_builds_the_index_and_is_idempotent(tmp_path: Path) -> None:
    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    first = chatgw("ingest", str(corpus), index=index)
    assert first.returncode == 0, first.stderr
    assert "3 added, 0 updated, 0 unchanged, 0 removed" in first.stdout
    assert "[#" not in first.stderr  # no progress bar when stderr is not a terminal

    snapshot = IndexSnapshot.load(index)
    assert snapshot is not None and snapshot.manifest.file_count == 3
    rows = {r.source_id: r for r in snapshot.rows.values()}
    assert set(rows) == {"guides/resume.md#0", "guides/deploy.html#0", "faq.txt#0"}
    assert rows["guides/resume.md#0"].title == "Resuming runs — After a disconnect"
    assert rows["guides/deploy.html#0"].title == "Deployment — Compose"
    assert "var x" not in rows["guides/deploy.html#0"].text
    mtimes = {p.name: p.stat().st_mtime_ns for p in index.iterdir()}

    second = chatgw("ingest", str(corpus), index=index)
    assert second.returncode == 0, second.stderr
    assert "0 added, 0 updated, 3 unchanged, 0 removed" in second.stdout
    assert {p.name: p.stat().st_mtime_ns for p in index.iterdir()} == mtimes


def test_ingest_command_fails_clearly_on_a_missing_path(tmp_path: Path) -> None:
    result = chatgw("ingest", str(tmp_path / "nope"), index=tmp_path / "index")
    assert result.returncode == 2
    assert "nope: no such file or directory" in result.stderr
    assert not (tmp_path / "index").exists()


async def test_worker_streams_retrieval_from_the_ingested_index(redis_url: str, tmp_path: Path) -> None:
    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    assert chatgw("ingest", str(corpus), index=index).returncode == 0
    stack = Stack(redis_url, tmp_path, CHATGW_INDEX_PATH=str(index))
    try:
        stack.start_worker()
        gateway = stack.start_gateway()
        async with await ChatgwConnection.open(gateway.url, "dev:alice") as conn:
            accepted = await conn.chat("How do I resume a run after losing my connection?")
            transcript = await conn.follow(accepted["run_id"])
        retrieval = [e for e in transcript.events if e["type"] == "retrieval"]
        assert len(retrieval) == 1, transcript.events
        sources = retrieval[0]["sources"]
        assert sources[0]["id"] == "guides/resume.md#0"
        assert sources[0]["title"] == "Resuming runs — After a disconnect"
        assert "after_seq" in sources[0]["snippet"]
        assert transcript.terminal is not None and transcript.terminal["type"] == "run.completed"
        assert "Resuming runs" in transcript.terminal["content"]  # the offline model answers from it
    finally:
        stack.stop()


def test_worker_with_another_embedder_reports_it_at_start(redis_url: str, tmp_path: Path) -> None:
    corpus, index = make_corpus(tmp_path / "corpus"), tmp_path / "index"
    assert chatgw("ingest", str(corpus), index=index).returncode == 0
    stack = Stack(redis_url, tmp_path, CHATGW_INDEX_PATH=str(index), CHATGW_EMBEDDINGS_DIM="512")
    try:
        worker = stack.start_worker(wait=False)
        wait_for(lambda: "was built with embedder hashing-v1 (dim 1024)" in worker.output(), what="error")
        assert "this process uses hashing-v1 (dim 512)" in worker.output()
        assert "--rebuild" in worker.output()
    finally:
        stack.stop()
