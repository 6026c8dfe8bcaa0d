"""Who goes first: a pro chat against a saturated worker with a backlog of free runs (docs/tiers.md).

    python -m bench.priority [--concurrency 4] [--backlog 200] [--probes 8] [--out bench/results/x.json]

One worker with ``--concurrency`` slots and one gateway (real processes on 127.0.0.1, the machine's
Redis, a fresh key prefix). First the idle time to first token of a pro chat (the chat frame sent →
its first token received) is measured on an idle system. Then every slot is filled with free runs
(each about ``--run-s`` long) and ``--backlog`` more free runs are queued behind them. While the
backlog waits, ``--probes`` pro chats are sent one after the other, at random moments of the runs in
the slots; each is stopped once its first token is in, so the slots stay busy with free runs.

Per probe: its time to first token; the time from the first slot freed after it was sent (a free
run's terminal event, worker clock) to its ``run.started`` (worker clock): the dispatch at a free
slot; and how many free runs started in between (must be none). The promise to check: the pro
chat's time to first token ≤ one run's length + the idle time to first token.

Bounded: it gives up after ``--timeout`` seconds; every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from client import ChatgwConnection
from shared.testing.stack import Stack


class Recorder(ChatgwConnection):
    """Keeps every run event with the client time it arrived (for the backlog's starts and ends)."""

    def __init__(self, ws: Any) -> None:
        self.events: list[dict[str, Any]] = []
        super().__init__(ws)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        if "seq" in frame:
            self.events.append(frame)
        super()._dispatch(frame)


async def open_recorder(url: str, token: str) -> Recorder:
    conn = await Recorder.open(url, token)
    assert isinstance(conn, Recorder)
    return conn


async def first_token(conn: ChatgwConnection, content: str) -> tuple[str, float, dict[str, Any]]:
    """Send a chat; returns its run, the seconds to its first token, and its run.started event."""
    sent = time.monotonic()
    accepted = await conn.chat(content)
    assert accepted["type"] == "run.accepted", accepted
    run_id = accepted["run_id"]
    started: dict[str, Any] = {}
    while True:
        event = await conn.next_event(run_id, timeout=120)
        if event["type"] == "run.started":
            started = event
        if event["type"] == "token":
            return run_id, time.monotonic() - sent, started
        if event["type"] in ("run.completed", "run.stopped", "run.failed"):
            raise RuntimeError(f"run {run_id} ended before a token: {event}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    url = stack.gateways[0].url
    crowd = await open_recorder(url, "dev:crowd")
    vip = await open_recorder(url, "dev:vip:pro")
    try:
        idle = []
        for i in range(5):
            run_id, ttft, _ = await first_token(vip, f"idle probe {i}")
            idle.append(ttft)
            await vip.stop(run_id)
            await vip.follow(run_id, timeout=30)

        # Every slot busy with free runs, then the backlog behind them.
        blockers = [(await crowd.chat(f"free run {i}"))["run_id"] for i in range(args.concurrency)]
        for run_id in blockers:
            await crowd.follow(run_id, until_seq=1, timeout=30)
        backlog = [(await crowd.chat(f"backlog question {i}"))["run_id"] for i in range(args.backlog)]
        backlog_set = set(backlog)

        probes = []
        for i in range(args.probes):
            await asyncio.sleep(random.uniform(0, args.run_s))  # a random moment of the runs in the slots
            waiting = sum(
                1 for e in crowd.events if e["type"] == "run.started" and e["run_id"] in backlog_set
            )
            sent_wall = time.time()
            run_id, ttft, started = await first_token(vip, f"pro question {i}")
            freed = [
                e["ts"]
                for e in crowd.events
                if e["type"] in ("run.completed", "run.stopped") and e["ts"] >= sent_wall
            ]
            ahead = [
                e for e in crowd.events if e["type"] == "run.started" and sent_wall <= e["ts"] < started["ts"]
            ]
            probes.append(
                {
                    "ttft_s": round(ttft, 3),
                    "slot_freed_to_started_ms": round((started["ts"] - min(freed)) * 1000, 1)
                    if freed
                    else None,
                    "free_runs_started_ahead": len(ahead),
                    "backlog_waiting": args.backlog - waiting,
                }
            )
            await vip.stop(run_id)  # its slot goes back to the free runs
            await vip.follow(run_id, timeout=30)

        lengths = [
            e["ts"] - s["ts"]
            for s in crowd.events
            if s["type"] == "run.started"
            for e in crowd.events
            if e["run_id"] == s["run_id"] and e["type"] == "run.completed"
        ]
        run_s = statistics.median(lengths) if lengths else args.run_s
        ttfts = [p["ttft_s"] for p in probes]
        dispatch = [
            p["slot_freed_to_started_ms"] for p in probes if p["slot_freed_to_started_ms"] is not None
        ]
        bound = run_s + statistics.median(idle)
        return {
            "settings": {
                "concurrency": args.concurrency,
                "backlog": args.backlog,
                "probes": args.probes,
                "token_delay_ms": args.token_delay_ms,
                "answer_tokens": args.tokens,
                "priority_aging_s": 30,
            },
            "idle_ttft_ms": {
                "median": round(statistics.median(idle) * 1000, 1),
                "max": round(max(idle) * 1000, 1),
            },
            "free_run_length_s": round(run_s, 3),
            "pro_ttft_s": {"median": round(statistics.median(ttfts), 3), "max": round(max(ttfts), 3)},
            "bound_s": round(bound, 3),
            "within_bound": max(ttfts) <= bound,
            "slot_freed_to_pro_started_ms": {
                "median": round(statistics.median(dispatch), 1) if dispatch else None,
                "max": round(max(dispatch), 1) if dispatch else None,
            },
            "free_runs_started_ahead_of_a_waiting_pro_run": sum(p["free_runs_started_ahead"] for p in probes),
            "free_backlog_wait_if_served_in_order_s": round(args.backlog / args.concurrency * run_s, 1),
            "probes": probes,
        }
    finally:
        for conn in (crowd, vip):
            await conn.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(
        "redis://127.0.0.1:6379/0",
        Path(tempfile.mkdtemp(prefix="chatgw-priority-")),
        CHATGW_WORKER_CONCURRENCY=str(args.concurrency),
        CHATGW_OFFLINE_TOKEN_DELAY_MS=str(args.token_delay_ms),
        CHATGW_OFFLINE_MAX_TOKENS=str(args.tokens),
        CHATGW_RATE_LIMIT_BURST="100000",
        CHATGW_RATE_LIMIT_PER_MINUTE="100000",
        CHATGW_MAX_RUNS_PER_USER="100000",
        CHATGW_MAX_FOLLOWS_PER_SOCKET="100000",
        CHATGW_WORKER_SHUTDOWN_GRACE_S="0",
    )
    try:
        stack.start_both()
        return await asyncio.wait_for(measure(stack, args), args.timeout)
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=4, help="worker slots (CHATGW_WORKER_CONCURRENCY)")
    parser.add_argument("--backlog", type=int, default=200, help="free runs queued behind the busy slots")
    parser.add_argument("--probes", type=int, default=8, help="pro chats sent while the backlog waits")
    parser.add_argument("--token-delay-ms", type=int, default=50, help="offline model: delay between tokens")
    parser.add_argument("--tokens", type=int, default=40, help="offline model: answer length cap")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--out", type=Path, help="also write the result (JSON) here")
    args = parser.parse_args()
    args.run_s = args.tokens * args.token_delay_ms / 1000
    result = asyncio.run(main_async(args))
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
