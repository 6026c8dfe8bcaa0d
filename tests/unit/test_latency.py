"""Gateway latencies: reading ts and type off a frame's head, relay sampling, first token and stop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Histogram

from gateway.follower import Follower
from gateway.latency import RelaySampler, RunTiming, event_ts, is_event
from gateway.metrics import GatewayMetrics
from shared.protocol import Pong, error_frame, event_body, serialize, splice_seq


def event(seq: int, event_type: str, ts: float, run_id: str = "r1", **fields: Any) -> str:
    return splice_seq(event_body(event_type, run_id, "c1", ts, **fields), seq)


def count(histogram: Histogram) -> float:
    return next(s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_count"))


def test_ts_and_type_are_read_off_the_head_of_the_frame() -> None:
    longest = "x" * 64  # identifiers are at most 64 characters
    for ts in (1795609079.94, 1795609079.9412345, 1e9, 1795609079.0):
        frame = splice_seq(event_body("run.completed", longest, longest, ts, content='"ts":1'), 2**53 - 1)
        assert event_ts(frame) == ts
        assert is_event(frame, "run.completed") and not is_event(frame, "run.completed.x")
    assert event_ts(event(3, "token", 12.5, text="hi")) == 12.5
    assert is_event(event(3, "token", 1.0, text="hi"), "token")
    assert not is_event(event(3, "token", 1.0, text="hi"), "tok")
    for other in (serialize(Pong(id="p")), error_frame("bad_json", "no"), "", "{"):
        assert event_ts(other) is None
        assert not is_event(other, "token")


def test_relay_samples_one_frame_in_n_and_skips_replays() -> None:
    metrics = GatewayMetrics()
    relay = RelaySampler(metrics.relay, every=4)
    old = event(1, "token", relay.live_since - 60, text="a")  # stamped before the follow: a replay
    for _ in range(8):
        relay.written(old)
    assert count(metrics.relay) == 0
    relay.following()
    live = event(2, "token", time.time(), text="b")
    for _ in range(8):
        relay.written(live)
    assert count(metrics.relay) == 2
    relay.written(serialize(Pong(id="p")))  # not an event: counted towards the sample, not observed
    assert count(metrics.relay) == 2


def test_first_token_and_stop_are_timed_once() -> None:
    metrics = GatewayMetrics()
    timing = RunTiming(metrics, chat_at=time.monotonic())
    now = time.time()
    assert not timing.sent([event(1, "run.started", now, attempt=1), event(2, "retrieval", now)], False)
    assert count(metrics.first_token) == 0
    assert timing.sent([event(3, "token", now, text="a"), event(4, "token", now, text="b")], False)
    assert count(metrics.first_token) == 1
    timing.stop_requested()
    assert not timing.sent([event(5, "token", now, text="c")], False)
    assert timing.sent([event(6, "run.stopped", now, content="abc")], True)
    assert count(metrics.first_token) == 1 and count(metrics.stop) == 1


def test_a_run_that_ends_another_way_is_not_timed() -> None:
    metrics = GatewayMetrics()
    timing = RunTiming(metrics, chat_at=time.monotonic())
    timing.stop_requested()
    failed = event(2, "run.failed", time.time(), error={"code": "agent_error", "message": "x"})
    assert timing.sent([event(1, "run.started", time.time(), attempt=1), failed], True)
    assert count(metrics.first_token) == 0 and count(metrics.stop) == 0


class LogStore:
    """read_log from a list (the follower's only use of the store)."""

    def __init__(self, entries: list[tuple[int, str]]) -> None:
        self.entries = entries

    async def read_log(self, run_id: str, after_seq: int, count: int | None = None) -> list[tuple[int, str]]:
        return [(seq, raw) for seq, raw in self.entries if seq > after_seq][: count or None]


async def test_the_follower_times_replayed_and_live_frames() -> None:
    metrics = GatewayMetrics()
    now = time.time()
    store = LogStore([(1, event(1, "run.started", now, attempt=1))])
    sent: list[str] = []

    async def send_wait(frame: str) -> bool:
        sent.append(frame)
        return True

    finished: list[Follower] = []
    follower = Follower(
        "r1", 0, store=store, send=sent.append, send_wait=send_wait, on_finished=finished.append  # type: ignore[arg-type]
    )
    follower.timing = RunTiming(metrics, chat_at=time.monotonic())
    follower.on_subscribed()
    while follower.cursor.syncing:
        await asyncio.sleep(0.001)
    assert count(metrics.first_token) == 0
    follower.on_event(2, event(2, "token", now, text="a"), False)
    assert count(metrics.first_token) == 1 and follower.timing is None
    follower.timing = RunTiming(metrics)
    follower.timing.stop_requested()
    follower.on_event(3, event(3, "run.stopped", now, content="a"), True)
    assert count(metrics.stop) == 1 and follower.timing is None
    assert finished == [follower] and len(sent) == 3
