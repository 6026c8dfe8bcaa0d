"""Real processes with JSON logs: the gateway's latency histograms and queue gauges fill in, the
worker exports its metrics on CHATGW_WORKER_METRICS_PORT, and every log line is one JSON object."""

from __future__ import annotations

import re
import urllib.request

import orjson

from cli.embedded_redis import free_port
from shared.testing.stack import Stack
from tests.integration.test_core_support import SLOW_MS, connect, start


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\S+) (\S+)$", text, flags=re.M) if m[1]}


def json_lines(output: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in output.splitlines() if line.strip()]


async def test_latencies_queue_gauges_and_json_logs(bare_stack: Stack) -> None:
    worker_port = free_port()
    start(
        bare_stack,
        CHATGW_LOG_FORMAT="json",
        CHATGW_OFFLINE_TOKEN_DELAY_MS=SLOW_MS,
        CHATGW_WORKER_METRICS_PORT=str(worker_port),
    )
    gateway = bare_stack.gateways[0]
    async with await connect(bare_stack) as conn:
        completed = await conn.chat("time me")
        transcript = await conn.follow(completed["run_id"], timeout=30)
        assert transcript.terminal is not None and transcript.terminal["type"] == "run.completed"

        stopped = await conn.chat("stop me")
        transcript = await conn.follow(stopped["run_id"], until_seq=4, timeout=10)
        assert (await conn.stop(stopped["run_id"]))["status"] == "stopping"
        transcript = await conn.follow(stopped["run_id"], transcript, timeout=10)
        assert transcript.terminal is not None and transcript.terminal["type"] == "run.stopped"

        metrics = scrape(f"{gateway.http}/metrics")
        assert metrics["chatgw_gateway_first_token_seconds_count"] == 2
        assert metrics["chatgw_gateway_stop_seconds_count"] == 1
        assert metrics["chatgw_gateway_relay_seconds_count"] >= 1
        assert metrics["chatgw_queue_waiting_runs"] == 0
        assert metrics["chatgw_queue_oldest_waiting_seconds"] == 0

    worker_metrics = scrape(f"http://127.0.0.1:{worker_port}/metrics")
    assert worker_metrics["chatgw_worker_dispatch_seconds_count"] == 2
    assert worker_metrics["chatgw_worker_first_token_seconds_count"] == 2

    gateway_log = json_lines(gateway.output())
    startup = [line for line in gateway_log if line["message"] == "Application startup complete."]
    assert startup and startup[0]["logger"] == "uvicorn.error"
    worker_log = json_lines(bare_stack.workers[0].output())
    assert any("ready (concurrency" in str(line["message"]) for line in worker_log)
    for line in gateway_log + worker_log:
        assert {"ts", "level", "logger", "message", "process"} <= line.keys(), line
