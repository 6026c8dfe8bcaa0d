"""CHATGW_LLM=openai end to end: real gateway and worker processes against the fake OpenAI server.

One worker/gateway pair serves most tests; each test picks the fake server's behaviour with a
``#fake:SPEC`` directive in its question (see tests/fakes/openai_server.py) and a unique ``tag`` so it
can find its own requests in the server's /_stats.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.embedded_redis import free_port
from client import ChatgwConnection
from client.connection import RunTranscript
from shared.testing.stack import Stack, wait_for
from tests.fakes import FakeOpenAIServer

API_KEY = "sk-test-SECRET-0123456789"
SYSTEM_PROMPT = "You are the chatgw integration-test assistant."
MAX_TOKENS = 20
RETRIES = 2  # so a transient failure is tried 3 times


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeOpenAIServer]:
    log = tmp_path_factory.mktemp("fake-openai") / "server.log"
    with FakeOpenAIServer("--delay", "0.01", "--api-key", API_KEY, log_path=log) as server:
        yield server


def openai_settings(base_url: str, **extra: str) -> dict[str, str]:
    return {
        "CHATGW_LLM": "openai",
        "CHATGW_LLM_BASE_URL": base_url,
        "CHATGW_LLM_MODEL": "fake-model",
        "CHATGW_LLM_API_KEY": API_KEY,
        "CHATGW_LLM_TIMEOUT_S": "1",
        "CHATGW_LLM_MAX_RETRIES": str(RETRIES),
        "CHATGW_LLM_MAX_TOKENS": str(MAX_TOKENS),
        "CHATGW_SYSTEM_PROMPT": SYSTEM_PROMPT,
        **extra,
    }


@pytest.fixture(scope="module")
def llm_stack(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAIServer
) -> Iterator[Stack]:
    s = Stack(redis_url, tmp_path_factory.mktemp("llm-stack"), **openai_settings(fake.base_url))
    s.start_worker()
    s.start_gateway()
    try:
        yield s
    finally:
        s.stop()


def tagged(spec: str) -> tuple[str, str]:
    """A question carrying ``spec`` with a fresh tag, and the tag."""
    tag = uuid.uuid4().hex[:10]
    sep = "&" if "?" in spec else "?"
    return f"Please answer. #fake:{spec}{sep}tag={tag}", tag


def requests_for(fake: FakeOpenAIServer, tag: str) -> list[dict[str, Any]]:
    return [r for r in fake.stats()["requests"] if tag in str(r.get("mode", ""))]


def user() -> str:
    # A user per test: the module shares one stack, and per-user chat rate limits would add up.
    return f"dev:llm-{uuid.uuid4().hex[:8]}"


async def ask(stack: Stack, question: str, timeout: float = 15.0) -> RunTranscript:
    async with await ChatgwConnection.open(stack.gateways[0].url, user()) as conn:
        accepted = await conn.chat(question)
        assert accepted["type"] == "run.accepted", accepted
        return await conn.follow(accepted["run_id"], timeout=timeout)


# ---------------------------------------------------------------- success


async def test_tokens_usage_and_system_prompt(llm_stack: Stack, fake: FakeOpenAIServer) -> None:
    question, tag = tagged("normal?tokens=8")
    transcript = await ask(llm_stack, question)
    terminal = transcript.terminal
    assert terminal is not None and terminal["type"] == "run.completed", transcript.events
    assert transcript.tokens == [f"t{i} " for i in range(8)]
    assert terminal["content"] == transcript.text
    assert "truncated" not in terminal

    [request] = requests_for(fake, tag)
    assert terminal["usage"] == {"prompt_tokens": request["prompt_tokens"], "completion_tokens": 8}
    assert request["authorization"] == f"Bearer {API_KEY}"
    assert request["stream"] and request["include_usage"]
    # Both limits: OpenAI reads max_completion_tokens, Ollama / older llama.cpp only max_tokens.
    assert request["max_completion_tokens"] == MAX_TOKENS and request["max_tokens"] == MAX_TOKENS
    assert request["temperature"] == pytest.approx(0.2)
    system, *_, user = request["messages"]
    assert system["role"] == "system" and system["content"].startswith(SYSTEM_PROMPT)
    assert user == {"role": "user", "content": question}


async def test_answer_cut_at_max_tokens_is_truncated(llm_stack: Stack, fake: FakeOpenAIServer) -> None:
    question, _ = tagged(f"normal?tokens={MAX_TOKENS + 10}")
    transcript = await ask(llm_stack, question)
    terminal = transcript.terminal
    assert terminal is not None and terminal["type"] == "run.completed", transcript.events
    assert terminal["truncated"] is True
    # Token events may carry several of the model's tokens; usage counts the model's.
    assert 1 <= len(transcript.tokens) <= MAX_TOKENS
    assert terminal["usage"]["completion_tokens"] == MAX_TOKENS


async def test_transient_failure_before_first_token_is_retried(
    llm_stack: Stack, fake: FakeOpenAIServer
) -> None:
    question, tag = tagged("flaky?code=503&times=1")
    transcript = await ask(llm_stack, question)
    terminal = transcript.terminal
    assert terminal is not None and terminal["type"] == "run.completed", transcript.events
    assert transcript.text == "".join(f"t{i} " for i in range(8))
    assert [r["status"] for r in requests_for(fake, tag)] == [503, 200]


# ---------------------------------------------------------------- failures

# (spec, code, requests the server should see, tokens streamed before the failure)
FAILURES = [
    ("status?code=401", "llm_unauthorized", 1, 0),
    ("status?code=403", "llm_unauthorized", 1, 0),
    ("status?code=404", "llm_bad_response", 1, 0),
    # Transient: retried RETRIES times (the server's Retry-After keeps the 429 case quick).
    ("status?code=429&retry_after_ms=20", "llm_rate_limited", 1 + RETRIES, 0),
    ("status?code=500", "llm_unavailable", 1 + RETRIES, 0),
    ("status?code=503", "llm_unavailable", 1 + RETRIES, 0),
    ("hang?after=-1", "llm_timeout", 1 + RETRIES, 0),
    # After the first token nothing is retried: the client already holds part of the answer.
    ("hang?after=2", "llm_timeout", 1, 2),
    ("malformed?after=2", "llm_bad_response", 1, 2),
    ("badshape?after=2", "llm_bad_response", 1, 2),
    ("truncate?after=2", "llm_bad_response", 1, 2),
    ("error?after=2", "llm_unavailable", 1, 2),
    ("drop?after=2", "llm_unavailable", 1, 2),
]


@pytest.mark.parametrize(("spec", "code", "attempts", "tokens"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_upstream_failure_ends_the_run_with_its_code(
    llm_stack: Stack, fake: FakeOpenAIServer, spec: str, code: str, attempts: int, tokens: int
) -> None:
    question, tag = tagged(spec)
    transcript = await ask(llm_stack, question)
    terminal = transcript.terminal
    assert terminal is not None and terminal["type"] == "run.failed", transcript.events
    assert terminal["error"]["code"] == code
    # The fake server echoes the key in its 401 body, as OpenAI does: neither client nor log repeats it.
    assert API_KEY not in terminal["error"]["message"]
    assert API_KEY not in llm_stack.workers[0].output()
    assert transcript.tokens == [f"t{i} " for i in range(tokens)]
    assert len(requests_for(fake, tag)) == attempts


async def test_connection_refused_is_llm_unavailable(redis_url: str, tmp_path: Path) -> None:
    unused = f"http://127.0.0.1:{free_port()}/v1"
    stack = Stack(redis_url, tmp_path, **openai_settings(unused, CHATGW_LLM_MAX_RETRIES="1"))
    try:
        stack.start_worker()
        stack.start_gateway()
        transcript = await ask(stack, "hello")
        terminal = transcript.terminal
        assert terminal is not None and terminal["type"] == "run.failed"
        assert terminal["error"]["code"] == "llm_unavailable"
    finally:
        stack.stop()


# ---------------------------------------------------------------- stop


async def test_stop_cancels_the_upstream_request(llm_stack: Stack, fake: FakeOpenAIServer) -> None:
    question, tag = tagged("normal?delay=0.2&tokens=200")
    async with await ChatgwConnection.open(llm_stack.gateways[0].url, user()) as conn:
        accepted = await conn.chat(question)
        run_id = accepted["run_id"]
        transcript = RunTranscript(run_id)
        while len(transcript.tokens) < 3:
            transcript.events.append(await conn.next_event(run_id))
        stopped_at = time.time()
        assert (await conn.stop(run_id))["status"] == "stopping"
        await conn.follow(run_id, transcript, timeout=10)
        terminal = transcript.terminal
        assert terminal is not None and terminal["type"] == "run.stopped", transcript.events
        assert terminal["content"] == transcript.text and len(transcript.tokens) >= 3

        def disconnected() -> list[dict[str, Any]]:
            [request] = requests_for(fake, tag)
            return [d for d in fake.stats()["disconnects"] if d["request"] == request["id"]]

        wait_for(lambda: bool(disconnected()), timeout=5, what="the fake server to see the disconnect")
        [disconnect] = disconnected()
        assert disconnect["t"] - stopped_at < 2.0
        # The server stopped writing at once, and far short of the 200 tokens it would have sent.
        assert fake.stats()["tokens_sent_after_disconnect"] == 0
        assert len(transcript.tokens) <= disconnect["tokens_sent"] < 200
        # Nothing more arrives for the run after its terminal event.
        with pytest.raises(asyncio.TimeoutError):
            await conn.next_event(run_id, timeout=0.5)


# ---------------------------------------------------------------- configuration


def test_unusable_base_url_stops_the_worker_at_start(redis_url: str, tmp_path: Path) -> None:
    stack = Stack(redis_url, tmp_path, **openai_settings("localhost:8000/v1"))
    try:
        worker = stack.start_worker(wait=False)
        wait_for(lambda: "CHATGW_LLM_BASE_URL" in worker.output(), timeout=15, what="the ConfigError")
        wait_for(lambda: not worker.alive(), timeout=3, what="the worker to exit")
    finally:
        stack.stop()
