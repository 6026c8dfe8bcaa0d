"""Chaos run: keep many conversations streaming while gateways and workers are killed and restarted
and pub/sub connections are dropped; then check every run.

    python -m bench.chaos --minutes 10 --clients 20

Checks, for every run started: contiguous seq from 1, exactly one terminal event, and the final
content equal to the concatenation of the last attempt's tokens — both as the client saw it live
(through reconnects) and as a fresh replay from the log. Prints a JSON summary; exits 1 on any
violation. Talks only to processes it starts on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from cli.embedded_redis import free_port
from client import ChatgwConnection, ResilientClient
from shared.testing.invariants import run_violations
from shared.testing.redis import redis_answers
from shared.testing.stack import Stack


class Chaos:
    def __init__(self, stack: Stack, ports: list[int], redis_url: str, interval_s: float) -> None:
        self.stack = stack
        self.ports = ports
        self.redis_url = redis_url
        self.interval_s = interval_s
        self.actions: Counter[str] = Counter()

    async def run(self, until: float) -> None:
        rng = random.Random(7)
        while time.monotonic() < until:
            await asyncio.sleep(self.interval_s * (0.5 + rng.random()))
            action = rng.choice(["kill_gateway", "kill_worker", "term_worker", "drop_pubsub", "term_gateway"])
            self.actions[action] += 1
            await asyncio.to_thread(self._do, action, rng)

    def _do(self, action: str, rng: random.Random) -> None:
        stack = self.stack
        if action in ("kill_gateway", "term_gateway"):
            alive = [g for g in stack.gateways if g.alive()]
            if len(alive) < 2:
                return
            victim = rng.choice(alive)
            victim.kill() if action == "kill_gateway" else victim.signal(signal.SIGTERM)
            victim.popen.wait(20)
            stack.start_gateway(port=victim.port)  # same address: clients keep their URL list
        elif action in ("kill_worker", "term_worker"):
            alive = [w for w in stack.workers if w.alive()]
            if len(alive) < 2:
                return
            victim = rng.choice(alive)
            victim.kill() if action == "kill_worker" else victim.signal(signal.SIGTERM)
            victim.popen.wait(60)
            stack.start_worker()
        elif action == "drop_pubsub":
            asyncio.run(self._drop_pubsub())

    async def _drop_pubsub(self) -> None:
        async with Redis.from_url(self.redis_url) as redis:
            await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")


async def converse(urls: list[str], user: str, until: float, runs: list[dict[str, Any]]) -> None:
    async with ResilientClient(urls, f"dev:{user}", max_backoff_s=1.0) as client:
        conversation: str | None = None
        turn = 0
        while time.monotonic() < until:
            turn += 1
            try:
                accepted = await client.chat(f"chaos question {turn} from {user}", conversation)
            except Exception as exc:  # e.g. a gateway died between send and reply
                runs.append({"user": user, "error": repr(exc)})
                await asyncio.sleep(0.2)
                continue
            conversation = accepted["conversation_id"]
            try:
                run = await client.wait(accepted["run_id"], timeout=300)
            except TimeoutError:
                # A run that never ends is the worst violation there is: record it, keep going.
                stuck = client.follow(accepted["run_id"])
                runs.append({"user": user, "run_id": stuck.run_id, "events": stuck.events, "stuck": True})
                conversation = None
                continue
            runs.append({"user": user, "run_id": run.run_id, "events": run.events})


async def replay(url: str, user: str, run_id: str) -> list[dict[str, Any]]:
    async with await ChatgwConnection.open(url, f"dev:{user}") as conn:
        await conn.resume(run_id, 0)
        return (await conn.follow(run_id, timeout=60)).events


async def main_async(args: argparse.Namespace) -> int:
    redis_url = args.redis_url or ("redis://127.0.0.1:6379/0" if redis_answers("127.0.0.1", 6379) else None)
    if redis_url is None:
        print("needs a Redis on 127.0.0.1:6379 or --redis-url", file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="chatgw-chaos-"))
    stack = Stack(
        redis_url,
        logs,
        CHATGW_OFFLINE_TOKEN_DELAY_MS=str(args.token_delay_ms),
        CHATGW_RUN_LEASE_S="2",
        CHATGW_SWEEP_INTERVAL_S="0.5",
        CHATGW_WORKER_SHUTDOWN_GRACE_S="1",
        CHATGW_MAX_ATTEMPTS="10",
        # The chaos run measures failures, not the per-user rate limit (tested on its own).
        CHATGW_RATE_LIMIT_PER_MINUTE="100000",
        CHATGW_RATE_LIMIT_BURST="1000",
    )
    started = time.monotonic()
    try:
        ports = [free_port() for _ in range(args.gateways)]
        for port in ports:
            stack.start_gateway(port=port)
        for _ in range(args.workers):
            stack.start_worker()
        urls = [f"ws://127.0.0.1:{p}/ws" for p in ports]
        until = time.monotonic() + args.minutes * 60
        runs: list[dict[str, Any]] = []
        chaos = Chaos(stack, ports, redis_url, args.interval)
        await asyncio.gather(
            chaos.run(until), *(converse(urls, f"u{i}", until, runs) for i in range(args.clients))
        )
        stuck = [r["run_id"] for r in runs if r.get("stuck")]
        checked = [r for r in runs if "events" in r and not r.get("stuck")]
        live_bad = {r["run_id"]: run_violations(r["events"]) for r in checked if run_violations(r["events"])}
        replay_bad: dict[str, list[str]] = {}
        for r in checked:
            events = await replay(urls[0], r["user"], r["run_id"])
            problems = run_violations(events)
            if events != r["events"]:
                problems.append("replay differs from what the client saw live")
            if problems:
                replay_bad[r["run_id"]] = problems
        outcomes = Counter(r["events"][-1]["type"] for r in checked)
        summary = {
            "minutes": args.minutes,
            "clients": args.clients,
            "runs_checked": len(checked),
            "requests_refused_or_lost": len(runs) - len(checked) - len(stuck),
            "request_errors": dict(Counter(r["error"].split("(")[0] for r in runs if "error" in r)),
            "request_error_examples": sorted({r["error"][:160] for r in runs if "error" in r})[:5],
            "outcomes": dict(outcomes),
            "runs_retried": sum(any(e["type"] == "run.retrying" for e in r["events"]) for r in checked),
            "events_checked": sum(len(r["events"]) for r in checked),
            "chaos_actions": dict(chaos.actions),
            "runs_that_never_ended": stuck,
            "violations_live": live_bad,
            "violations_replay": replay_bad,
            "seconds": round(time.monotonic() - started, 1),
            "logs": str(logs),
        }
        print(json.dumps(summary, indent=2))
        return 1 if live_bad or replay_bad or stuck else 0
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=3.0, help="mean seconds between chaos actions")
    parser.add_argument("--token-delay-ms", type=float, default=20.0)
    parser.add_argument("--redis-url", default=None)
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
