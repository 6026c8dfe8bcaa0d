"""One worker process under load (issue 9): 1,000 runs at once on its event loop, stops that still
land promptly meanwhile, and next to no CPU while it has nothing to do."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from bench.procstat import cpu_seconds
from client import ChatgwConnection, RunTranscript
from shared.testing.invariants import run_violations
from shared.testing.stack import Stack

IDLE_WINDOW_S = 5.0


@pytest.mark.soak
def test_an_idle_worker_of_1024_slots_uses_almost_no_cpu(bare_stack: Stack) -> None:
    worker = bare_stack.start_worker(CHATGW_WORKER_CONCURRENCY="1024")
    time.sleep(1.0)  # let the boot's own work (imports done, first heartbeat) settle
    before = cpu_seconds(worker.pid)
    time.sleep(IDLE_WINDOW_S)  # the measurement window itself
    share = (cpu_seconds(worker.pid) - before) / IDLE_WINDOW_S
    print(f"idle worker (1024 slots): {share:.2%} of a core over {IDLE_WINDOW_S:g} s")
    assert share < 0.05


async def _run(conn: ChatgwConnection, run_id: str) -> RunTranscript:
    return await conn.follow(run_id, timeout=240)


async def _start(conn: ChatgwConnection, count: int, tag: str) -> list[str]:
    for i in range(count):
        await conn.send({"type": "chat", "content": f"{tag} question {i}", "id": f"{tag}{i}"})
    replies = [await conn.reply(timeout=60) for _ in range(count)]
    assert all(r["type"] == "run.accepted" for r in replies), [
        r for r in replies if r["type"] != "run.accepted"
    ]
    return [r["run_id"] for r in replies]


async def _stop_when_started(conn: ChatgwConnection, run_id: str) -> tuple[str, float, float]:
    """Stop a run once it has started: its terminal type, the seconds from the stop to its terminal
    event being written (its ``ts``), and to it reaching the client."""
    transcript = RunTranscript(run_id)
    while not transcript.events:
        transcript.events.append(await conn.next_event(run_id, timeout=120))
        if transcript.terminal is not None:
            return transcript.terminal["type"], 0.0, 0.0
    sent = time.time()
    await conn.send({"type": "stop", "run_id": run_id})
    await conn.follow(run_id, transcript, timeout=60)
    received = time.time()
    assert not run_violations(transcript.events)
    assert transcript.terminal is not None
    return transcript.terminal["type"], transcript.terminal["ts"] - sent, received - sent


LOAD = {
    "CHATGW_WORKER_CONCURRENCY": "1024",
    "CHATGW_MAX_RUNS_PER_USER": "1000",
    "CHATGW_RATE_LIMIT_BURST": "1000",
    "CHATGW_RATE_LIMIT_PER_MINUTE": "100000",
}
USERS = 20  # 50 runs each


async def _open(stack: Stack) -> list[ChatgwConnection]:
    url = stack.gateways[0].url
    return [await ChatgwConnection.open(url, f"dev:load{u}", open_timeout=30) for u in range(USERS)]


def _check(transcripts: list[RunTranscript]) -> Counter[str]:
    violations = [run_violations(t.events) for t in transcripts if run_violations(t.events)]
    assert not violations, violations[:3]
    return Counter(t.terminal["type"] if t.terminal else "none" for t in transcripts)


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_1000_runs_at_once_on_one_worker_all_complete(bare_stack: Stack) -> None:
    bare_stack.settings.update(LOAD, CHATGW_OFFLINE_TOKEN_DELAY_MS="0")
    bare_stack.start_both()
    conns = await _open(bare_stack)
    try:
        started = time.monotonic()
        batches = await asyncio.gather(*(_start(c, 1000 // USERS, f"u{u}-") for u, c in enumerate(conns)))
        runs = await asyncio.gather(
            *(_run(c, run_id) for c, batch in zip(conns, batches, strict=True) for run_id in batch)
        )
        took_s = time.monotonic() - started
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    outcomes = _check(runs)
    print(f"1000 runs (0 ms token delay) on one worker: {dict(outcomes)} in {took_s:.1f} s")
    assert outcomes == {"run.completed": 1000}


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_stops_land_promptly_while_1000_runs_stream(bare_stack: Stack) -> None:
    # Runs long enough to be stopped mid-answer (about 7 s each unloaded, longer under this load),
    # however far behind the client is reading.
    bare_stack.settings.update(LOAD, CHATGW_OFFLINE_TOKEN_DELAY_MS="200")
    bare_stack.start_both()
    conns = await _open(bare_stack)
    try:
        batches = await asyncio.gather(*(_start(c, 1000 // USERS, f"u{u}-") for u, c in enumerate(conns)))
        # While the 1,000 stream, stop the first run of five users as soon as each has started.
        stops = await asyncio.gather(
            *(_stop_when_started(c, b[0]) for c, b in zip(conns[:5], batches[:5], strict=True))
        )
        others = [
            (c, run_id)
            for u, (c, batch) in enumerate(zip(conns, batches, strict=True))
            for run_id in batch[u < 5 :]
        ]
        runs = await asyncio.gather(*(_run(c, run_id) for c, run_id in others))
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    outcomes = _check(runs)
    written_ms = [round(w * 1000) for kind, w, _ in stops if kind == "run.stopped"]
    received_ms = [round(r * 1000) for kind, _, r in stops if kind == "run.stopped"]
    print(
        f"stop -> run.stopped with 1000 runs streaming: written after {written_ms} ms, "
        f"received after {received_ms} ms; the others: {dict(outcomes)}"
    )
    assert outcomes == {"run.completed": 1000 - 5}
    assert len(written_ms) == 5, stops
    assert max(received_ms) < 15_000
