"""Helpers for failure tests: invariants every run must satisfy, whatever was killed."""

from __future__ import annotations

from typing import Any

TERMINAL = {"run.completed", "run.stopped", "run.failed"}


def assert_run_invariants(events: list[dict[str, Any]]) -> None:
    """Contiguous seq from 1, exactly one terminal event (the last), content = last attempt's tokens."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), f"seq not contiguous: {seqs}"
    terminals = [e for e in events if e["type"] in TERMINAL]
    assert len(terminals) == 1 and events[-1] is terminals[0], [e["type"] for e in events]
    tokens: list[str] = []
    for event in events:
        if event["type"] == "run.retrying":
            tokens = []
        elif event["type"] == "token":
            tokens.append(event["text"])
    if events[-1]["type"] in {"run.completed", "run.stopped"}:
        assert events[-1]["content"] == "".join(tokens)
