"""gateway.store_watch: when Redis counts as lost and as back (the pure rule, then the probe loop)."""

from __future__ import annotations

import asyncio

from gateway.store_watch import Availability, Change, StoreWatch


def test_a_blip_is_not_an_outage() -> None:
    a = Availability(grace_s=3.0, now=0.0)
    assert a.observe(False, 1.0) is None
    assert a.observe(False, 2.0) is None
    assert a.observe(True, 2.5) is None
    assert a.observe(False, 5.0) is None  # 2.5 s since the last success
    assert a.up


def test_lost_after_the_grace_then_back_at_the_first_success() -> None:
    a = Availability(grace_s=3.0, now=0.0)
    a.observe(True, 1.0)
    assert [a.observe(False, t) for t in (2.0, 3.0, 4.0, 5.0)] == [None, None, Change.LOST, None]
    assert not a.up
    assert a.observe(True, 6.0) is Change.BACK
    assert a.up and a.observe(True, 7.0) is None


def test_a_slow_probe_that_never_answers_counts_as_failing() -> None:
    a = Availability(grace_s=3.0, now=0.0)
    assert a.observe(False, 1.5) is None  # timed out
    assert a.observe(False, 2.9) is None
    assert a.observe(False, 4.4) is Change.LOST


async def test_the_watch_calls_back_once_per_change() -> None:
    up = True
    changes: list[str] = []

    async def probe() -> None:
        if not up:
            raise ConnectionError("down")

    watch = StoreWatch(
        probe,
        on_lost=lambda: changes.append("lost"),
        on_back=lambda: changes.append("back"),
        interval_s=0.01,
        timeout_s=0.05,
        grace_s=0.05,
    )
    task = asyncio.create_task(watch.run_forever())
    try:
        await asyncio.sleep(0.05)
        assert watch.available and changes == []
        up = False
        while watch.available:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        up = True
        while not watch.available:
            await asyncio.sleep(0.01)
        assert changes == ["lost", "back"]
    finally:
        task.cancel()
