"""RunCursor: each seq delivered once and in order, from the log and from (lossy, racy) pub/sub."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cursor import RunCursor, Verdict


def ev(seq: int) -> str:
    return f"e{seq}"


def entries(first: int, last: int, terminal_at: int | None = None) -> list[tuple[int, str, bool]]:
    return [(s, ev(s), s == terminal_at) for s in range(first, last + 1)]


def synced(last_seq: int = 0) -> RunCursor:
    cursor = RunCursor(last_seq=last_seq)
    assert cursor.on_log([]) == ([], False)
    assert cursor.syncing is False
    return cursor


# ---------------------------------------------------------------- judge


def test_judge_verdicts() -> None:
    cursor = RunCursor(last_seq=5)
    assert cursor.judge(3) is Verdict.DUPLICATE
    assert cursor.judge(5) is Verdict.DUPLICATE
    assert cursor.judge(6) is Verdict.DELIVER
    assert cursor.judge(7) is Verdict.GAP


# ---------------------------------------------------------------- initial sync (pending buffer)


def test_new_cursor_is_syncing_and_buffers_live_events() -> None:
    cursor = RunCursor(last_seq=0)
    assert cursor.syncing and not cursor.finished
    assert cursor.on_live(1, ev(1), False) == ([], False)
    assert cursor.on_live(2, ev(2), False) == ([], False)
    assert cursor.last_seq == 0
    assert set(cursor.pending) == {1, 2}


def test_log_then_pending_continuation_without_duplicates() -> None:
    cursor = RunCursor(last_seq=0)
    # Live 3, 4 arrive while the log read (which will return 1..3) is in flight.
    cursor.on_live(3, ev(3), False)
    cursor.on_live(4, ev(4), False)
    frames, again = cursor.on_log(entries(1, 3))
    assert frames == [ev(1), ev(2), ev(3), ev(4)]
    assert again is False
    assert cursor.last_seq == 4 and cursor.pending == {} and cursor.syncing is False


def test_live_events_already_covered_by_after_seq_are_not_buffered() -> None:
    cursor = RunCursor(last_seq=5)
    cursor.on_live(4, ev(4), False)
    cursor.on_live(5, ev(5), False)
    assert cursor.pending == {}
    frames, again = cursor.on_log(entries(6, 7))
    assert frames == [ev(6), ev(7)] and again is False


def test_log_entries_at_or_below_last_seq_are_skipped() -> None:
    cursor = RunCursor(last_seq=3)
    frames, _ = cursor.on_log(entries(1, 5))
    assert frames == [ev(4), ev(5)]
    assert cursor.last_seq == 5


def test_pending_beyond_the_log_asks_for_another_read() -> None:
    cursor = RunCursor(last_seq=0)
    cursor.on_live(5, ev(5), False)
    frames, again = cursor.on_log(entries(1, 3))
    assert frames == [ev(1), ev(2), ev(3)]
    assert again is True and cursor.syncing is True and set(cursor.pending) == {5}
    frames, again = cursor.on_log(entries(4, 5))
    assert frames == [ev(4), ev(5)]
    assert again is False and cursor.syncing is False and cursor.pending == {}


def test_stale_pending_entries_are_dropped_after_a_log_read() -> None:
    cursor = RunCursor(last_seq=0)
    cursor.on_live(2, ev(2), False)
    frames, again = cursor.on_log(entries(1, 4))
    assert frames == [ev(1), ev(2), ev(3), ev(4)]
    assert again is False and cursor.pending == {}


def test_empty_log_read_ends_sync() -> None:
    cursor = RunCursor(last_seq=0)
    assert cursor.on_log([]) == ([], False)
    assert cursor.syncing is False and cursor.last_seq == 0


# ---------------------------------------------------------------- live after sync


def test_live_in_order_is_delivered_and_duplicates_dropped() -> None:
    cursor = synced()
    assert cursor.on_live(1, ev(1), False) == ([ev(1)], False)
    assert cursor.on_live(2, ev(2), False) == ([ev(2)], False)
    assert cursor.on_live(2, ev(2), False) == ([], False)
    assert cursor.on_live(1, ev(1), False) == ([], False)
    assert cursor.last_seq == 2


def test_gap_buffers_and_requests_a_log_read() -> None:
    cursor = synced()
    cursor.on_live(1, ev(1), False)
    # 2 was dropped by pub/sub.
    assert cursor.on_live(3, ev(3), False) == ([], True)
    assert cursor.syncing is True and set(cursor.pending) == {3}
    # While syncing, further live events wait too (no second read requested by on_live).
    assert cursor.on_live(4, ev(4), False) == ([], False)
    frames, again = cursor.on_log(entries(2, 3))
    assert frames == [ev(2), ev(3), ev(4)]
    assert again is False and cursor.syncing is False and cursor.last_seq == 4


def test_gap_filled_by_log_that_already_has_more() -> None:
    cursor = synced()
    cursor.on_live(1, ev(1), False)
    cursor.on_live(3, ev(3), False)
    frames, again = cursor.on_log(entries(2, 6))
    assert frames == [ev(2), ev(3), ev(4), ev(5), ev(6)]
    assert again is False
    # Live copies of 4..6 arriving late are duplicates.
    for s in (4, 5, 6):
        assert cursor.on_live(s, ev(s), False) == ([], False)
    assert cursor.on_live(7, ev(7), False) == ([ev(7)], False)


# ---------------------------------------------------------------- terminal


def test_terminal_live_finishes_and_ignores_everything_after() -> None:
    cursor = synced()
    cursor.on_live(1, ev(1), False)
    assert cursor.on_live(2, ev(2), True) == ([ev(2)], False)
    assert cursor.finished
    assert cursor.on_live(3, ev(3), False) == ([], False)
    assert cursor.on_live(3, ev(3), True) == ([], False)
    assert cursor.last_seq == 2


def test_terminal_in_log_stops_delivery_and_clears_pending() -> None:
    cursor = RunCursor(last_seq=0)
    cursor.on_live(4, ev(4), False)  # bogus: nothing can follow a terminal event
    frames, again = cursor.on_log([*entries(1, 3, terminal_at=3), (4, ev(4), False)])
    assert frames == [ev(1), ev(2), ev(3)]
    assert again is False and cursor.finished and cursor.pending == {} and cursor.syncing is False


def test_terminal_in_pending_is_delivered_after_the_log() -> None:
    cursor = RunCursor(last_seq=0)
    cursor.on_live(3, ev(3), True)
    frames, again = cursor.on_log(entries(1, 2))
    assert frames == [ev(1), ev(2), ev(3)]
    assert again is False and cursor.finished and cursor.pending == {}


def test_resume_after_terminal_delivers_nothing_more() -> None:
    cursor = RunCursor(last_seq=2)
    frames, again = cursor.on_log(entries(3, 3, terminal_at=3))
    assert frames == [ev(3)] and cursor.finished and again is False
    assert cursor.on_log(entries(3, 3, terminal_at=3)) == ([], False)


# ---------------------------------------------------------------- simulation


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, int, list[str]]:
    """A run of n events; the follower starts after `after`; a random schedule of deliveries."""
    n = draw(st.integers(1, 25))
    after = draw(st.integers(0, n))
    actions = ["produce", "live", "drop", "dup", "read", "finish_read"]
    steps = draw(st.lists(st.sampled_from(actions), max_size=120))
    return n, after, steps


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_any_interleaving_delivers_each_seq_once_in_order(case: tuple[int, int, list[str]]) -> None:
    """Model the follower: a log (prefix of produced events), a lossy/duplicating live channel, and
    log reads that take a snapshot now and are applied later (so live events overtake them)."""
    n, after, steps = case
    produced = 0
    live_queue: list[int] = []
    reads: list[list[tuple[int, str, bool]]] = []  # snapshots taken, not yet applied
    read_wanted = True  # the subscription confirmation asks for a read
    cursor = RunCursor(last_seq=after)
    out: list[str] = []

    def snapshot() -> list[tuple[int, str, bool]]:
        return [(s, ev(s), s == n) for s in range(cursor.last_seq + 1, produced + 1)]

    def apply(frames: list[str], need: bool) -> None:
        nonlocal read_wanted
        out.extend(frames)
        read_wanted = read_wanted or need

    for action in steps:
        if action == "produce" and produced < n:
            produced += 1
            live_queue.append(produced)
        elif action in ("live", "drop", "dup") and live_queue:
            seq = live_queue.pop(0)
            if action == "drop":
                # Pub/sub only loses messages across a reconnect, whose confirmation asks for a read.
                read_wanted = True
            else:
                apply(*cursor.on_live(seq, ev(seq), seq == n))
            if action == "dup":
                apply(*cursor.on_live(seq, ev(seq), seq == n))
        elif action == "read" and read_wanted:
            read_wanted = False
            reads.append(snapshot())
        elif action == "finish_read" and reads:
            apply(*cursor.on_log(reads.pop(0)))
        # Invariant at every step: a strictly consecutive prefix after `after`.
        assert out == [ev(s) for s in range(after + 1, after + 1 + len(out))]

    # Drain: the run finishes, every live message is delivered or dropped, reads complete.
    while produced < n:
        produced += 1
        live_queue.append(produced)
    for seq in live_queue:
        apply(*cursor.on_live(seq, ev(seq), seq == n))
    for snap in reads:
        apply(*cursor.on_log(snap))
    for _ in range(3):
        if not cursor.finished and (read_wanted or cursor.syncing):
            read_wanted = False
            apply(*cursor.on_log(snapshot()))
    assert out == [ev(s) for s in range(after + 1, n + 1)]
    if after < n:
        assert cursor.finished
