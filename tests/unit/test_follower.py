"""Follower: a replay page is sent whole even if its terminal event arrives live meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.follower import Follower


class _Log:
    """The run's log as RunStore.read_log returns it (seq, raw JSON)."""

    def __init__(self, events: list[tuple[int, str]]) -> None:
        self.events = events

    async def read_log(self, run_id: str, after_seq: int, count: int | None = None) -> list[tuple[int, str]]:
        return [(seq, raw) for seq, raw in self.events if seq > after_seq][:count]


def _event(seq: int, kind: str) -> str:
    return f'{{"seq":{seq},"type":"{kind}","run_id":"r","conversation_id":"c","ts":0}}'


async def test_a_replay_page_is_sent_whole_when_its_terminal_event_arrives_live_meanwhile() -> None:
    events = [(1, _event(1, "run.started")), (2, _event(2, "token")), (3, _event(3, "run.completed"))]
    sent: list[str] = []
    follower: Follower

    async def send_wait(frame: str) -> bool:
        sent.append(frame)
        await asyncio.sleep(0)  # room in the socket's queue: the loop runs other callbacks meanwhile
        if len(sent) == 1:
            follower.on_event(3, events[2][1], True)  # pub/sub delivers the terminal event now
        return True

    store: Any = _Log(events)
    follower = Follower(
        "r", 0, store=store, send=sent.append, send_wait=send_wait, on_finished=lambda f: None
    )
    follower.on_subscribed()
    for _ in range(50):
        await asyncio.sleep(0)
    assert sent == [raw for _, raw in events]
