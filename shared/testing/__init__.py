"""Test and benchmark harness: real chatgw processes, run invariants, a Redis probe.

Used by tests/ and bench/ alike, so that benchmarks never import the test suite. Not used by the
gateway or the worker at run time.
"""

from shared.testing.invariants import TERMINAL, assert_run_invariants, run_violations
from shared.testing.redis import redis_answers
from shared.testing.stack import ROOT, Gateway, Proc, Stack, wait_for

__all__ = [
    "ROOT",
    "TERMINAL",
    "Gateway",
    "Proc",
    "Stack",
    "assert_run_invariants",
    "redis_answers",
    "run_violations",
    "wait_for",
]
