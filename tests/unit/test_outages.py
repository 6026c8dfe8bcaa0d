"""worker.outages.OutageLog: when this process could not reach Redis (the sweeper's evidence)."""

from __future__ import annotations

import time

import pytest

from worker.outages import OutageLog


def test_nothing_is_covered_before_any_failure() -> None:
    log = OutageLog()
    log.reached()
    assert not log.covers(time.time())


def test_an_open_outage_covers_from_the_last_answer_on() -> None:
    log = OutageLog()
    log.reached()
    last_answer = time.time()
    log.failed()
    assert log.covers(last_answer + 0.001)
    assert log.covers(time.time() + 60)  # still away: anything since is covered
    assert not log.covers(last_answer - 1)


def test_a_closed_outage_covers_only_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    log = OutageLog()
    log.reached()
    now[0] = 1002.0
    log.failed()  # away since 1000, when it last answered
    now[0] = 1050.0
    log.failed()  # still away: the window keeps its start
    log.reached()
    assert log.covers(1000.0) and log.covers(1030.0) and log.covers(1050.0)
    assert not log.covers(999.0) and not log.covers(1051.0)


def test_a_hung_call_opens_the_window_when_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [2000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    log = OutageLog()
    log.reached()
    now[0] = 2010.0
    log.failed(since=2005.0)
    log.reached()
    assert log.covers(2006.0) and not log.covers(2004.0)
