"""Chaos run: keep many conversations streaming while gateways and workers are killed and restarted
and pub/sub connections are dropped; then check every run.

    python -m bench.chaos --minutes 10 --clients 20

With ``--own-redis`` it runs its own redis-server (AOF on, a free port) and takes that away too:
Redis restarts, and outages longer than the workers' outage budget (``--outage-s`` against
``--outage-budget-s``), after which the lost attempts are retried.

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
from shared.testing.own_redis import OwnRedis
from shared.testing.redis import redis_answers
from shared.testing.stack import Stack

PROCESS_FAULTS = ["kill_gateway", "kill_worker", "term_worker", "drop_pubsub", "term_gateway"]
REDIS_FAULTS = ["restart_redis", "redis_outage"]  # only on a Redis of our own (--own-redis)


class Chaos:
    def __init__(
        self,
        stack: Stack,
        ports: list[int],
        redis_url: str,
        interval_s: float,
        own_redis: OwnRedis | None = None,
        outage_s: float = 8.0,
    ) -> None:
        self.stack = stack
        self.ports = ports
        self.redis_url = redis_url
        self.interval_s = interval_s
        self.own_redis = own_redis
        self.outage_s = outage_s
        self.faults = PROCESS_FAULTS + (REDIS_FAULTS if own_redis is not None else [])
        self.actions: Counter[str] = Counter()

    async def run(self, until: float) -> None:
        rng = random.Random(7)
        deck: list[str] = []
        while time.monotonic() < until:
            await asyncio.sleep(self.interval_s * (0.5 + rng.random()))
            if not deck:  # every fault type once per round, in a random order
                deck = rng.sample(self.faults, len(self.faults))
            action = deck.pop()
            self.actions[action] += 1
            # One fault at a time: a process restarted while Redis is away could not get ready.
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
        elif action == "restart_redis" and self.own_redis is not None:
            self.own_redis.restart()  # SIGTERM (AOF written out), then up again on the same port
        elif action == "redis_outage" and self.own_redis is not None:
            self.own_redis.stop()
            time.sleep(self.outage_s)  # the outage itself
            self.own_redis.start()

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
    logs = Path(tempfile.mkdtemp(prefix="chatgw-chaos-"))
    own_redis = OwnRedis(logs / "redis") if args.own_redis else None
    try:
        return await _chaos(args, logs, own_redis)
    finally:
        if own_redis is not None:
            own_redis.close()


async def _chaos(args: argparse.Namespace, logs: Path, own_redis: OwnRedis | None) -> int:
    if own_redis is not None:
        redis_url: str | None = own_redis.url
    else:
        redis_url = args.redis_url or (
            "redis://127.0.0.1:6379/0" if redis_answers("127.0.0.1", 6379) else None
        )
    if redis_url is None:
        print("needs a Redis on 127.0.0.1:6379, --redis-url or --own-redis", file=sys.stderr)
        return 2
    stack = Stack(
        redis_url,
        logs,
        CHATGW_OFFLINE_TOKEN_DELAY_MS=str(args.token_delay_ms),
        CHATGW_RUN_LEASE_S="2",
        CHATGW_SWEEP_INTERVAL_S="0.5",
        CHATGW_WORKER_SHUTDOWN_GRACE_S="1",
        CHATGW_MAX_ATTEMPTS="10",
        # Outages longer than this make workers give their attempts up (retried once Redis is back).
        CHATGW_STORE_OUTAGE_BUDGET_S=str(args.outage_budget_s),
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
        chaos = Chaos(stack, ports, redis_url, args.interval, own_redis, args.outage_s)
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
            "redis": "own (AOF), restarted and taken away" if own_redis is not None else redis_url,
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
    parser.add_argument(
        "--own-redis",
        action="store_true",
        help="start a redis-server (AOF) of its own, and restart it / take it away",
    )
    parser.add_argument("--outage-s", type=float, default=8.0, help="how long a Redis outage lasts")
    parser.add_argument("--outage-budget-s", type=float, default=5.0, help="CHATGW_STORE_OUTAGE_BUDGET_S")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
