"""The invariants every run must satisfy, whatever was killed (used by the tests and bench/chaos.py)."""

from __future__ import annotations

from typing import Any

TERMINAL = {"run.completed", "run.stopped", "run.failed"}


def run_violations(events: list[dict[str, Any]]) -> list[str]:
    """Contiguous seq from 1, exactly one terminal event (the last), content = last attempt's tokens."""
    problems = []
    seqs = [e["seq"] for e in events]
    if seqs != list(range(1, len(events) + 1)):
        problems.append(f"seq not contiguous: {seqs}")
    terminals = [e for e in events if e["type"] in TERMINAL]
    if len(terminals) != 1 or events[-1] is not terminals[0]:
        problems.append(f"{len(terminals)} terminal events: {[e['type'] for e in events]}")
    tokens: list[str] = []
    for event in events:
        if event["type"] == "run.retrying":
            tokens = []
        elif event["type"] == "token":
            tokens.append(event["text"])
    final = events[-1] if events else {}
    if final.get("type") in {"run.completed", "run.stopped"} and final["content"] != "".join(tokens):
        problems.append("content differs from the last attempt's tokens")
    return problems


def assert_run_invariants(events: list[dict[str, Any]]) -> None:
    problems = run_violations(events)
    assert not problems, problems
