"""Per (socket, run) delivery bookkeeping: pure code, no I/O.

A cursor remembers the last seq sent to the client. Events arrive from two sources — the run's log
(replay) and pub/sub (live) — possibly overlapping or with holes (pub/sub is at-most-once). The cursor
delivers each seq exactly once, in order, and says when a hole means the log must be read again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    DELIVER = "deliver"  # the next seq: send it
    DUPLICATE = "duplicate"  # already sent: drop it
    GAP = "gap"  # something is missing before it: read the log from last_seq


@dataclass
class RunCursor:
    last_seq: int
    syncing: bool = True  # until the first log read completes, live events wait in `pending`
    finished: bool = False  # the terminal event has been delivered
    pending: dict[int, tuple[str, bool]] = field(default_factory=dict)
    # Live events that arrived while syncing but did not fit in `pending`: they are in the log, so
    # their loss only means one more read. Keeps a long replay of a fast run in bounded memory.
    max_pending: int = 1024
    dropped: bool = False

    def judge(self, seq: int) -> Verdict:
        if seq <= self.last_seq:
            return Verdict.DUPLICATE
        if seq == self.last_seq + 1:
            return Verdict.DELIVER
        return Verdict.GAP

    def on_live(self, seq: int, raw: str, terminal: bool) -> tuple[list[str], bool]:
        """A pub/sub event. Returns (frames to send, whether the log must be read)."""
        if self.finished:
            return [], False
        if self.syncing:
            if seq > self.last_seq:
                if len(self.pending) < self.max_pending:
                    self.pending[seq] = (raw, terminal)
                else:
                    self.dropped = True
            return [], False
        verdict = self.judge(seq)
        if verdict is Verdict.DELIVER:
            return self._accept(seq, raw, terminal), False
        if verdict is Verdict.GAP:
            self.pending[seq] = (raw, terminal)
            self.syncing = True
            return [], True
        return [], False

    def on_log(self, entries: list[tuple[int, str, bool]], *, more: bool = False) -> tuple[list[str], bool]:
        """The result of a log read after ``last_seq`` (``more``: the page was full, the log may hold
        more). Returns (frames to send, read again?)."""
        out: list[str] = []
        for seq, raw, terminal in entries:
            if self.finished:
                break
            if self.judge(seq) is Verdict.DELIVER:
                out.extend(self._accept(seq, raw, terminal))
        if more and not self.finished:
            return out, True
        # Live events that arrived while reading may continue where the log stopped.
        while not self.finished and (self.last_seq + 1) in self.pending:
            raw, terminal = self.pending.pop(self.last_seq + 1)
            out.extend(self._accept(self.last_seq + 1, raw, terminal))
        for seq in [s for s in self.pending if s <= self.last_seq]:
            del self.pending[seq]
        if self.finished:
            self.pending.clear()
            self.syncing = False
            self.dropped = False
            return out, False
        if self.dropped:
            self.dropped = False
            return out, True
        if self.pending:
            # A later event is known but the one before it is not in the log yet: read again.
            return out, True
        self.syncing = False
        return out, False

    def _accept(self, seq: int, raw: str, terminal: bool) -> list[str]:
        self.last_seq = seq
        if terminal:
            self.finished = True
        return [raw]
