"""How long a SIGKILLed worker's run waits before it is retried, with the default settings.

    python -m bench.orphan_bound --trials 3

Each trial: one worker streams a slow run; the worker is SIGKILLed after a few tokens while a second
worker is already up; the time from the kill to the client receiving `run.retrying` is measured.
The bound to beat is CHATGW_RUN_LEASE_S + CHATGW_SWEEP_INTERVAL_S (10 s + 2 s by default), promised
≤ 30 s. Talks only to processes it starts on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from client import ResilientClient
from shared.testing.stack import Stack


async def trial(stack: Stack) -> float:
    for worker in stack.workers:
        worker.kill()
    doomed = stack.start_worker()  # alone, so the run is surely its
    gateway = stack.gateways[0]
    async with ResilientClient([gateway.url], "dev:bench") as client:
        run_id = (await client.chat("a long answer, please"))["run_id"]
        while sum(e["type"] == "token" for e in client.follow(run_id).events) < 3:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(stack.start_worker)  # the survivor: sweeps and retries
        killed = time.monotonic()
        doomed.kill()
        while not any(e["type"] == "run.retrying" for e in client.follow(run_id).events):
            await asyncio.sleep(0.01)
        detected = time.monotonic() - killed
        await client.wait(run_id, timeout=120)
        return detected


async def main_async(trials: int) -> dict[str, object]:
    stack = Stack(
        "redis://127.0.0.1:6379/0",
        Path(tempfile.mkdtemp(prefix="chatgw-orphan-")),
        CHATGW_OFFLINE_TOKEN_DELAY_MS="100",
        CHATGW_OFFLINE_MAX_TOKENS="400",
    )
    try:
        stack.start_gateway()
        results = [await trial(stack) for _ in range(trials)]
        return {
            "settings": {"CHATGW_RUN_LEASE_S": 10, "CHATGW_SWEEP_INTERVAL_S": 2},
            "seconds_kill_to_retrying": [round(r, 2) for r in results],
            "max": round(max(results), 2),
            "median": round(statistics.median(results), 2),
        }
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3)
    print(json.dumps(asyncio.run(main_async(parser.parse_args().trials)), indent=2))


if __name__ == "__main__":
    main()
