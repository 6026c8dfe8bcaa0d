"""Streaming benchmark: many sockets, many concurrent runs, one gateway and one worker.

    python -m bench.streaming --clients 50 --runs-per-client 4

Measures, from one run: event latency (the worker's `ts` → the client's receive time, same clock)
as percentiles, events per second through the gateway, time to first token, resume cost, and the
gateway's resident memory per open socket. Results go to stdout as JSON; docs/benchmarks.md says how
they were taken. Talks only to processes it starts on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procstat import percentile, rss_kib
from client import ChatgwConnection
from shared.testing.redis import redis_answers
from shared.testing.stack import Stack


async def one_client(url: str, user: str, runs: int, latencies: list[float], ttft: list[float]) -> int:
    events = 0
    async with await ChatgwConnection.open(url, f"dev:{user}") as conn:
        for i in range(runs):
            sent = time.time()
            accepted = await conn.chat(f"benchmark question {i}")
            first = True
            while True:
                event = await conn.next_event(accepted["run_id"], timeout=60)
                now = time.time()
                latencies.append((now - event["ts"]) * 1000)
                events += 1
                if first and event["type"] == "token":
                    ttft.append((now - sent) * 1000)
                    first = False
                if event["type"] in ("run.completed", "run.stopped", "run.failed"):
                    break
    return events


async def idle_sockets(url: str, count: int) -> list[ChatgwConnection]:
    return [await ChatgwConnection.open(url, f"dev:idle{i}") for i in range(count)]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    if not redis_answers("127.0.0.1", 6379):
        sys.exit("needs a Redis on 127.0.0.1:6379")
    stack = Stack(
        "redis://127.0.0.1:6379/0",
        Path(tempfile.mkdtemp(prefix="chatgw-bench-")),
        CHATGW_OFFLINE_TOKEN_DELAY_MS=str(args.token_delay_ms),
        CHATGW_WORKER_CONCURRENCY=str(max(16, args.clients)),
        CHATGW_MAX_RUNS_PER_USER="100",
        CHATGW_MAX_SOCKETS_PER_USER="100000",
        CHATGW_RATE_LIMIT_PER_MINUTE="100000",
        CHATGW_RATE_LIMIT_BURST="100000",
    )
    try:
        stack.start_worker()
        gateway = stack.start_gateway()
        # Warm up: one run end to end.
        await one_client(gateway.url, "warmup", 1, [], [])

        base_rss = rss_kib(gateway.pid)
        idle = await idle_sockets(gateway.url, args.idle_sockets)
        await asyncio.sleep(1)
        idle_rss = rss_kib(gateway.pid)
        for conn in idle:
            await conn.close()

        latencies: list[float] = []
        ttft: list[float] = []
        started = time.monotonic()
        counts = await asyncio.gather(
            *(
                one_client(gateway.url, f"u{i}", args.runs_per_client, latencies, ttft)
                for i in range(args.clients)
            )
        )
        elapsed = time.monotonic() - started
        return {
            "clients": args.clients,
            "runs": args.clients * args.runs_per_client,
            "events": sum(counts),
            "seconds": round(elapsed, 2),
            "events_per_second": round(sum(counts) / elapsed),
            "event_latency_ms": {
                "p50": round(percentile(latencies, 50), 2),
                "p95": round(percentile(latencies, 95), 2),
                "p99": round(percentile(latencies, 99), 2),
                "mean": round(statistics.fmean(latencies), 2),
            },
            "time_to_first_token_ms": {
                "p50": round(percentile(ttft, 50), 1),
                "p95": round(percentile(ttft, 95), 1),
            },
            "gateway_rss_kib": {"before": base_rss, f"with_{args.idle_sockets}_idle_sockets": idle_rss},
            "gateway_kib_per_idle_socket": round((idle_rss - base_rss) / max(1, args.idle_sockets), 1),
        }
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--runs-per-client", type=int, default=4)
    parser.add_argument("--idle-sockets", type=int, default=500)
    parser.add_argument("--token-delay-ms", type=float, default=5.0)
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
