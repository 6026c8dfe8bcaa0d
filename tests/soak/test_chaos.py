"""The chaos run behind the `soak` marker: `pytest -m soak` (CHATGW_CHAOS_MINUTES, default 1).

It runs its own Redis (``--own-redis``), so Redis restarts and outages are among its faults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_chaos_run_keeps_every_run_whole() -> None:
    minutes = os.environ.get("CHATGW_CHAOS_MINUTES", "1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.chaos",
            "--minutes",
            minutes,
            "--clients",
            "10",
            "--own-redis",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
