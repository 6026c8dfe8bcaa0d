"""Daily token budgets with a real worker, two gateways and Redis (docs/tiers.md): answers in flight
finish, the next chat is refused with the reset time on every gateway, other tiers are not affected,
and the usage shows over HTTP and, per tier, in the worker's metrics."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

from cli.embedded_redis import free_port
from shared.testing.stack import Stack
from tests.integration.test_core_support import assert_well_formed, close_quietly, connect, start

BUDGET = 50  # an offline answer costs about 90 tokens: one answer crosses it


def fetch(url: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
        body: bytes = response.read()
        return body.decode()


def billed_metric(text: str, tier: str) -> float:
    prefix = f'chatgw_worker_billed_tokens_total{{tier="{tier}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


async def test_a_spent_budget_refuses_the_next_chat_on_every_gateway(bare_stack: Stack) -> None:
    metrics_port = free_port()
    start(
        bare_stack,
        gateways=2,
        CHATGW_DAILY_TOKEN_BUDGET=json.dumps({"free": BUDGET}),
        CHATGW_WORKER_METRICS_PORT=str(metrics_port),
    )
    alice = await connect(bare_stack, "alice")
    elsewhere = await connect(bare_stack, "alice", gateway=1)
    bob = await connect(bare_stack, "bob:pro", gateway=1)
    try:
        # Two chats under budget, in flight together: both answers finish, neither is cut.
        runs = [(await alice.chat(q))["run_id"] for q in ("first question", "second question")]
        answers = [await alice.follow(run_id, timeout=20) for run_id in runs]
        spent = 0
        for answer in answers:
            assert_well_formed(answer)
            done = answer.terminal
            assert done is not None and done["type"] == "run.completed" and not done.get("truncated")
            assert done["content"] == answer.text and len(done["content"].split()) > 20
            spent += done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"]
        assert spent > BUDGET

        # The next chat is refused, on this gateway and the other, with when the budget resets.
        midnight = (int(time.time()) // 86_400 + 1) * 86_400
        for conn in (alice, elsewhere):
            refused = await conn.chat("one more", ref="c-3")
            assert refused["type"] == "error" and refused["code"] == "budget_exceeded", refused
            assert refused["id"] == "c-3"
            assert refused["resets_at"] == midnight
            assert 0 < refused["retry_after_ms"] <= 86_400_000
            assert time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(midnight)) in refused["message"]

        # Another tier has no budget here.
        other = await bob.follow((await bob.chat("a pro question"))["run_id"], timeout=20)
        assert other.terminal is not None and other.terminal["type"] == "run.completed"

        usage: dict[str, Any] = json.loads(
            await asyncio.to_thread(fetch, f"{bare_stack.gateways[1].http}/v1/usage", "dev:alice")
        )
        assert usage["tier"] == "free" and usage["budget"] == BUDGET and usage["remaining"] == 0
        assert usage["tokens_today"] == spent and usage["resets_at"] == midnight
        metrics = await asyncio.to_thread(fetch, f"http://127.0.0.1:{metrics_port}/metrics")
        assert billed_metric(metrics, "free") == spent
        assert billed_metric(metrics, "pro") > 0
        assert 'user="' not in metrics  # per tier, never per user
    finally:
        await close_quietly(alice, elsewhere, bob)


async def test_usage_needs_a_valid_token(bare_stack: Stack) -> None:
    start(bare_stack, workers=0)
    url = f"{bare_stack.gateways[0].http}/v1/usage"
    for token in (None, "dev:alice:gold"):
        try:
            await asyncio.to_thread(fetch, url, token)
        except urllib.error.HTTPError as err:
            assert err.code == 401
            body = json.loads(err.read())
            assert body["code"] == "unauthorized" and body["message"]
        else:
            raise AssertionError(f"{token!r} was not refused")
    usage = json.loads(await asyncio.to_thread(fetch, url, "dev:alice:pro"))
    assert usage["tier"] == "pro" and usage["tokens_today"] == 0
    assert usage["budget"] is None and usage["remaining"] is None
