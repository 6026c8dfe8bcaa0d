"""Embedders: the offline hashing one (deterministic, normalised, meaningful) and the OpenAI-compatible
one against a local fake endpoint (no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from shared.errors import AgentError, ConfigError, ErrorCode
from shared.settings import load_settings
from worker.agent.embeddings import HashingEmbedder, OpenAIEmbedder, build_embedder, features, stem, terms

RESUME = "A client that lost its connection reconnects and resumes the run from the last seq it saw."
RESUME_PARAPHRASE = "How do I resume a run after my connection dropped?"
DEPLOY = "Docker Compose starts Redis, one gateway on port 8000 and a worker container."
PINNED_SLOTS = [(612, -1.0), (1019, 1.0), (474, -1.0)]


def cosine(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.dot(a, b))  # rows are unit vectors


def test_vectors_are_deterministic_and_normalised() -> None:
    embedder = HashingEmbedder(256)
    first = embedder.embed([RESUME, DEPLOY])
    again = HashingEmbedder(256).embed([RESUME, DEPLOY])
    assert first.dtype == np.float32 and first.shape == (2, 256)
    assert np.array_equal(first, again)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)


def test_vectors_do_not_depend_on_python_hash_seed() -> None:
    # Python's str hash is salted per process; blake2b is not. Compare with another process.
    code = (
        "from worker.agent.embeddings import HashingEmbedder;"
        f"print(HashingEmbedder(64).embed([{RESUME!r}])[0].round(6).tolist())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == HashingEmbedder(64).embed([RESUME])[0].round(6).tolist()


def test_feature_slots_are_pinned() -> None:
    # If this changes, every index built so far is silently wrong: bump HashingEmbedder.VERSION instead.
    embedder = HashingEmbedder(1024)
    assert [embedder._slot(f) for f in ("resum", "run", "resum run")] == PINNED_SLOTS


def test_empty_text_is_the_zero_vector_not_nan() -> None:
    vector = HashingEmbedder(64).embed(["", "the of and"])  # nothing but stopwords
    assert not np.isnan(vector).any() and not vector.any()


def test_related_texts_are_closer_than_unrelated_ones() -> None:
    embedder = HashingEmbedder(1024)
    resume, paraphrase, deploy = embedder.embed([RESUME, RESUME_PARAPHRASE, DEPLOY])
    assert cosine(resume, paraphrase) > 0.2
    assert cosine(resume, paraphrase) > cosine(paraphrase, deploy) + 0.15


def test_stemming_and_stopwords() -> None:
    assert {stem(w) for w in ("stop", "stops", "stopped", "stopping")} == {"stop"}
    assert {stem(w) for w in ("resume", "resumed", "resuming", "resumes")} == {"resum"}
    assert {stem(w) for w in ("retry", "retries", "retried")} == {"retry"}
    assert stem("redis") == "redis" and stem("status") == "status"
    assert terms("What is the Stop frame?") == ["stop", "fram"]
    assert features("run timeout")["run timeout"] == 1  # word pairs are features too


def test_dimension_and_bad_dimension() -> None:
    assert HashingEmbedder(32).dimension() == 32
    with pytest.raises(ConfigError):
        HashingEmbedder(8)


def test_build_embedder_from_settings() -> None:
    offline = build_embedder(load_settings(embeddings_dim=128))
    assert isinstance(offline, HashingEmbedder) and offline.dim == 128 and offline.identity == "hashing-v1"
    remote = build_embedder(
        load_settings(embeddings="openai", embeddings_model="m1", embeddings_base_url="http://127.0.0.1:9/v1")
    )
    assert isinstance(remote, OpenAIEmbedder) and remote.identity == "openai:m1" and remote.known_dim is None


# ---------------------------------------------------------------- OpenAI-compatible endpoint


class _FakeEmbeddings(BaseHTTPRequestHandler):
    status = 200
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if self.status != 200:
            payload: dict[str, Any] = {"error": {"message": "nope", "type": "invalid_api_key"}}
        else:
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(text)), 1.0, 0.0]}
                for i, text in enumerate(body["input"])
            ]
            payload = {"object": "list", "data": data, "model": body["model"], "usage": {}}
        raw = json.dumps(payload).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_endpoint() -> Iterator[str]:
    _FakeEmbeddings.status = 200
    _FakeEmbeddings.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEmbeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_embedder_calls_the_endpoint_and_normalises(fake_endpoint: str) -> None:
    embedder = OpenAIEmbedder("tiny", base_url=fake_endpoint, api_key="k", batch_size=2, max_retries=0)
    vectors = embedder.embed(["abc", "abcd", "x"])
    assert vectors.shape == (3, 3) and embedder.known_dim == 3 and embedder.dimension() == 3
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    # Raw strings in batches of 2: never token ids (which would need a local tokenizer download).
    assert [r["input"] for r in _FakeEmbeddings.requests] == [["abc", "abcd"], ["x"]]
    assert {r["path"] for r in _FakeEmbeddings.requests} == {"/v1/embeddings"}
    assert _FakeEmbeddings.requests[0]["model"] == "tiny"
    assert _FakeEmbeddings.requests[0]["auth"] == "Bearer k"


def test_openai_embedder_errors_become_agent_errors(fake_endpoint: str) -> None:
    _FakeEmbeddings.status = 401
    embedder = OpenAIEmbedder("tiny", base_url=fake_endpoint, max_retries=0)
    with pytest.raises(AgentError) as caught:
        embedder.embed(["hello"])
    assert caught.value.code == ErrorCode.LLM_UNAUTHORIZED
